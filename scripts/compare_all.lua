-- compare_all.lua — trains MLP, CNN and ResCNN on FashionMNIST, each with the
-- recipe below, and writes one comparison table and one plot.
--
--   fmhost script scripts/compare_all.lua                       the full comparison
--   fmhost script scripts/compare_all.lua epochs=1 limit=2000   a quick check
--
-- Arguments (KEY=VALUE, all optional):
--   models=mlp,cnn,rescnn   the models to train, in this order
--   epochs=20               at most this many epochs per model
--   limit=0                 train on the first N images of the training split (0: all)
--   data=DIR                the FashionMNIST files (default: $FMHOST_DATA, then
--                           /usr/share/datasets/fashion-mnist)
--   out=.                   write artifacts/ and results/ under this directory
--   seed=42  threads=0  quiet=false
--   sweep=NAME              the sweep id grouping these runs in the run store
--                           (default compare_all-<UTC date and time>)
--
-- Under Open MPI the models are spread over the ranks, each with the threads
-- given, and rank 0 alone writes the files, the same as one process's:
--   mpirun -np 3 fmhost script scripts/compare_all.lua threads=1
--
-- Writes OUT/results/comparison.md, comparison.csv and comparison_val_acc.png
-- again after every model, so an interrupted run still leaves a table; and
-- for each model what `fmhost train` writes (OUT/artifacts/MODEL_best.safetensors,
-- OUT/results/MODEL/...).  Every run is recorded in the run store OUT/runs.db
-- (or $FMHOST_RUNS_DB) under one sweep id, and OUT/results/comparison_dashboard/index.html
-- shows them (fmhost runs html).

local fm = require "fm"

-- The recipe.  Every model follows the protocol of SPEC §3 — Adam with lr 1e-3,
-- batch 64, at most 20 epochs, early stopping on validation loss with
-- patience 5, and the test accuracy of the checkpoint with the lowest
-- validation loss — plus what serves it:
--   * a cosine learning-rate schedule, stepped once per epoch, from 1e-3 down
--     toward 0 (reached one epoch after the last, as PyTorch's
--     CosineAnnealingLR with T_max = the epochs), for all three models: big
--     steps while the loss falls fast, small ones to settle into a minimum at
--     the end;
--   * random crops (28x28 out of the image zero-padded by 2) and horizontal
--     flips for the two convolutional models, which otherwise start to overfit
--     after a few epochs.  A shift is a small change for a convolution but a
--     different input for every weight of the MLP's first layer, so the MLP
--     trains on the images as they are.
local PROTOCOL = {optimizer = "adam", lr = 1e-3, batch_size = 64, patience = 5, val_split = 0.1}
local RECIPES = {
    mlp    = {scheduler = "cosine", augment = false},
    cnn    = {scheduler = "cosine", augment = true},
    rescnn = {scheduler = "cosine", augment = true},
}
-- The table this comparison was set up to beat (test accuracy).
local ORIGINAL = {mlp = 0.8835, cnn = 0.9150, rescnn = 0.9293}

-- ---- arguments -----------------------------------------------------------

local function int_arg(name, default)
    local v = fm.args[name]
    if v == nil then return default end
    if math.type(v) ~= "integer" or v < 0 then
        error(string.format("%s=%s: expected a whole number >= 0", name, tostring(v)), 0)
    end
    return v
end

local epochs = int_arg("epochs", 20)
local limit = int_arg("limit", 0)
local seed = int_arg("seed", 42)
local threads = int_arg("threads", 0)
local out = tostring(fm.args.out or ".")
local quiet = fm.args.quiet == true
local sweep = tostring(fm.args.sweep or ("compare_all-" .. os.date("!%Y%m%d-%H%M%S")))
local models = {}
for name in tostring(fm.args.models or "mlp,cnn,rescnn"):gmatch("[^,%s]+") do
    if not RECIPES[name] then
        error(string.format("models=%s: unknown model '%s' (choose from mlp, cnn, rescnn)",
                            tostring(fm.args.models), name), 0)
    end
    models[#models + 1] = name
end
if epochs < 1 then error("epochs=0: train at least one epoch", 0) end

-- ---- results -------------------------------------------------------------

local function describe(recipe)
    local parts = {string.format("%s lr %g", PROTOCOL.optimizer, PROTOCOL.lr),
                   recipe.scheduler .. " per epoch"}
    parts[#parts + 1] = recipe.augment and "crop+flip" or "no augmentation"
    return table.concat(parts, ", ")
end

local COLUMNS = {
    {"model", "model"},
    {"recipe", "recipe"},
    {"params", "parameters"},
    {"epochs", "epochs run"},
    {"best_epoch", "best epoch"},
    {key = "val_acc", title = "val acc", format = "%.4f"},
    {key = "test_acc", title = "test acc", format = "%.4f"},
    {key = "original", title = "original table", format = "%.4f"},
    {key = "train_seconds", title = "train time (s)", format = "%.0f"},
}

local results = out .. "/results"
local rows, curves = {}, {}

local function write_results(data)
    local lines = {
        "# FashionMNIST: MLP, CNN and ResCNN",
        "",
        string.format("Protocol: Adam (lr %g), batch %d, at most %d epochs, early stopping on "
                      .. "validation loss (patience %d), validation split %g of the %d training "
                      .. "images%s, seed %d; test accuracy of the best checkpoint on %d test images.",
                      PROTOCOL.lr, PROTOCOL.batch_size, epochs, PROTOCOL.patience,
                      PROTOCOL.val_split, data.train_size,
                      limit > 0 and string.format(" (training on the first %d)", limit) or "",
                      seed, data.test_size),
        "Recipe on top of it (see scripts/compare_all.lua): a cosine learning-rate schedule "
            .. "stepped per epoch for every model; random crop and horizontal flip for cnn and "
            .. "rescnn.",
        string.format("Kernels: %s (results are reproducible on the same kernel set; avx2 and "
                      .. "avx512 agree bit for bit).", (fm.kernels())),
        "",
        fm.table(rows, COLUMNS),
        "'original table' is the original project's test accuracy for the same model.",
        "",
        string.format("Runs: sweep `%s` in the run store (`fmhost runs list --sweep %s`); "
                      .. "dashboard: [comparison_dashboard/index.html](comparison_dashboard/index.html).",
                      sweep, sweep),
    }
    if #rows < #models then
        lines[#lines + 1] = string.format("\nPartial results: %d of %d models done.", #rows, #models)
    end
    fm.write_markdown(results .. "/comparison.md", lines)
    fm.write_csv(results .. "/comparison.csv", rows,
                 {"model", "recipe", "params", "epochs", "best_epoch", "val_acc", "test_acc",
                  "train_seconds"})
    fm.plot{
        file = results .. "/comparison_val_acc.png",
        title = "Validation accuracy per epoch",
        xlabel = "epoch",
        ylabel = "validation accuracy",
        series = curves,
    }
end

-- ---- the comparison ---------------------------------------------------------

local data = fm.dataset{dir = fm.args.data, val_split = PROTOCOL.val_split, seed = seed,
                        limit = limit}
print(string.format("compare_all: %s on %s, up to %d epochs each", table.concat(models, ", "),
                    data.dir, epochs))

-- What the table and the plot need of a run; kept as runs finish.
local function add_result(r)
    rows[#rows + 1] = r.row
    curves[#curves + 1] = {name = r.row.model, y = r.val_acc}
    write_results(data)
end

-- Every model is one item of fm.dist.map: one process trains them in order
-- (and writes the table after every model); under mpirun each rank trains
-- its share and rank 0 writes the table once all are done.
local alone = fm.dist.size() == 1
local who = alone and "" or string.format("rank %d: ", fm.dist.rank())
sweep = fm.dist.broadcast(sweep)  -- one sweep id, rank 0's clock

local finished = fm.dist.map(models, function(name, i)
    local recipe = RECIPES[name]
    print(string.format("%s[%d/%d] %s: %s", who, i, #models, name, describe(recipe)))

    local options = {plugin = name, data = data, epochs = epochs, out = out, threads = threads,
                     quiet = quiet, sweep = sweep}
    for k, v in pairs(PROTOCOL) do options[k] = v end
    for k, v in pairs(recipe) do options[k] = v end
    local run = fm.train(options)
    local test = run:evaluate("test")
    local r = {
        row = {
            model = name,
            recipe = describe(recipe),
            params = run.params,
            epochs = run.epochs,
            best_epoch = run.best_epoch,
            val_acc = run.best.val_acc,
            test_acc = test.acc,
            original = ORIGINAL[name],
            train_seconds = run.seconds,
        },
        val_acc = {},
        runs_db = run.runs_db,
    }
    for epoch, m in ipairs(run.history) do r.val_acc[epoch] = m.val_acc end
    run:close()
    if alone then add_result(r) end

    print(string.format("%s[%d/%d] %s: test accuracy %.4f (original table %.4f), best epoch %d "
                        .. "of %d, %.0f s", who, i, #models, name, test.acc, ORIGINAL[name],
                        r.row.best_epoch, r.row.epochs, r.row.train_seconds))
    return r
end)
if fm.dist.rank() ~= 0 then return end
if not alone then
    for _, r in ipairs(finished) do add_result(r) end
end
-- The run store the runs went to (nil: none).
local runs_db = #finished > 0 and finished[#finished].runs_db or nil

print("wrote " .. results .. "/comparison.md, comparison.csv and comparison_val_acc.png")
if runs_db then
    local page = fm.runs.html{dir = results .. "/comparison_dashboard", db = runs_db, sweep = sweep}
    print(string.format("runs recorded in %s, sweep %s: fmhost runs list --runs-db %s --sweep %s",
                        runs_db, sweep, runs_db, sweep))
    print("dashboard: " .. page)
end
