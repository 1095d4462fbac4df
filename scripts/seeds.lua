-- seeds.lua — the comparison of compare_all.lua repeated over several seeds:
-- how much of a difference between models is the model, and how much is luck
-- (initialisation, split, shuffling, dropout and augmentation all follow the seed).
--
--   fmhost script scripts/seeds.lua                           3 seeds, all models
--   fmhost script scripts/seeds.lua seeds=1,2 models=mlp epochs=2 limit=1000
--
-- Arguments (KEY=VALUE, all optional):
--   seeds=42,43,44          the seeds
--   models=mlp,cnn,rescnn   the models
--   epochs=20  limit=0  data=DIR  out=.  threads=0  quiet=false   as in compare_all.lua
--   sweep=NAME              the sweep id grouping these runs in the run store
--                           (default seeds-<UTC date and time>)
--
-- Under Open MPI the runs are spread over the ranks, each with the threads
-- given, and rank 0 alone writes the files, the same as one process's:
--   mpirun -np 3 fmhost script scripts/seeds.lua threads=1
--
-- Writes OUT/results/seeds.md and seeds.csv (mean ± std of the test accuracy
-- per model), again after every model.  Each run's artifacts go to
-- OUT/runs/seed-N/ so that no run overwrites another's.  Every run is recorded
-- in one run store, OUT/runs.db (or $FMHOST_RUNS_DB), under one sweep id, and
-- OUT/results/seeds_dashboard/index.html shows them (fmhost runs html).
--
-- Another script runs its own recipe over seeds with this one, passing a
-- table that replaces the defaults below (the command line's arguments still
-- apply), as scripts/best.lua does:
--   loadfile(dir .. "/seeds.lua"){
--     name = "best",                  -- OUT/results/best.md, OUT/runs/best/ROW/seed-N/
--     title = "...", about = "...",   -- the table's heading and the line under it
--     protocol = {...},               -- fm.train options of every run
--     recipes = {rescnn = {...},      -- a row each: fm.train options on top (epochs=
--                plain = {plugin = "rescnn", ...}},  -- on the command line wins); the
--                                     -- plugin is the row's name or `plugin`
--     describe = {rescnn = "..."},    -- the recipe column
--     seeds = "1,2,3", epochs = 20,   -- defaults of seeds= and epochs=
--     per_class = true,               -- also a table of test accuracy per class
--   }

local fm = require "fm"

local spec = ...
if type(spec) ~= "table" then spec = {} end  -- run by fmhost script: its arguments

-- The same protocol and recipe as compare_all.lua (read the reasons there).
local PROTOCOL = spec.protocol or
    {optimizer = "adam", lr = 1e-3, batch_size = 64, patience = 5, val_split = 0.1}
local RECIPES = spec.recipes or {
    mlp    = {scheduler = "cosine", augment = false},
    cnn    = {scheduler = "cosine", augment = true},
    rescnn = {scheduler = "cosine", augment = true},
}
local DESCRIBE = spec.describe or
    {mlp = "cosine", cnn = "cosine, crop+flip", rescnn = "cosine, crop+flip"}
local NAME = spec.name or "seeds"

local function int_arg(name, default)
    local v = fm.args[name]
    if v == nil then return default end
    if math.type(v) ~= "integer" or v < 0 then
        error(string.format("%s=%s: expected a whole number >= 0", name, tostring(v)), 0)
    end
    return v
end

local function list_arg(name, default)
    local items = {}
    for item in tostring(fm.args[name] or default):gmatch("[^,%s]+") do items[#items + 1] = item end
    return items
end

local epochs = int_arg("epochs", spec.epochs or 20)
local limit = int_arg("limit", 0)
local threads = int_arg("threads", 0)
local out = tostring(fm.args.out or ".")
local quiet = fm.args.quiet == true
local sweep = tostring(fm.args.sweep or (NAME .. "-" .. os.date("!%Y%m%d-%H%M%S")))
local env_db = os.getenv("FMHOST_RUNS_DB")
local runs_db = env_db and env_db ~= "" and env_db or out .. "/runs.db"
local model_names = {}
for name in pairs(RECIPES) do model_names[#model_names + 1] = name end
table.sort(model_names)
local models = list_arg("models", spec.recipes and table.concat(model_names, ",") or "mlp,cnn,rescnn")
-- Where a run writes: one directory per seed, and per row under a recipe of
-- another script's (two rows may train the same plugin).
local function run_dir(name, seed)
    if spec.name then return string.format("%s/runs/%s/%s/seed-%d", out, spec.name, name, seed) end
    return string.format("%s/runs/seed-%d", out, seed)
end
local seeds = {}
for _, s in ipairs(list_arg("seeds", spec.seeds or "42,43,44")) do
    local n = math.tointeger(tonumber(s))
    if not n or n < 0 then error("seeds=" .. tostring(fm.args.seeds) .. ": '" .. s .. "' is not a seed", 0) end
    seeds[#seeds + 1] = n
end
for _, name in ipairs(models) do
    if not RECIPES[name] then
        error(string.format("unknown model '%s' (choose from %s)", name, table.concat(model_names, ", ")), 0)
    end
end

-- Mean and sample standard deviation (0 for a single value).
local function mean_std(xs)
    local sum = 0
    for _, x in ipairs(xs) do sum = sum + x end
    local mean = sum / #xs
    local sq = 0
    for _, x in ipairs(xs) do sq = sq + (x - mean) ^ 2 end
    return mean, #xs > 1 and math.sqrt(sq / (#xs - 1)) or 0
end

local COLUMNS = {
    {"model", "model"},
    {"recipe", "recipe"},
    {"n", "seeds"},
    {"test_acc", "test acc (mean ± std)"},
    {key = "min", title = "min", format = "%.4f"},
    {key = "max", title = "max", format = "%.4f"},
    {"per_seed", "per seed"},
}

-- Each recipe may set its own epochs; the command line's epochs= sets all.
local epochs_said = string.format("at most %d epochs", epochs)
for _, name in ipairs(models) do
    if RECIPES[name].epochs and fm.args.epochs == nil then epochs_said = "epochs as in the recipe column" end
end

local results = out .. "/results"
local rows = {}
local data = fm.dataset{dir = fm.args.data, val_split = PROTOCOL.val_split, limit = limit}

local function write_results()
    local lines = {
        "# " .. (spec.title or "FashionMNIST: test accuracy over seeds"),
        "",
        string.format("%s, %s, seeds %s%s.",
                      spec.about or "Protocol and recipe of scripts/compare_all.lua",
                      epochs_said, table.concat(seeds, ", "),
                      limit > 0 and string.format(", training on the first %d images", limit) or ""),
        "",
        fm.table(rows, COLUMNS),
    }
    if #rows < #models then
        lines[#lines + 1] = string.format("Partial results: %d of %d models done.", #rows, #models)
    end
    if spec.per_class and #rows > 0 then
        lines[#lines + 1] = "Test accuracy per class, mean over the seeds:"
        lines[#lines + 1] = ""
        local cols, by_class = {{"class", "class"}}, {}
        for r, row in ipairs(rows) do cols[#cols + 1] = {key = "m" .. r, title = row.model, format = "%.4f"} end
        for c, class in ipairs(fm.class_names) do
            by_class[c] = {class = class}
            for r, row in ipairs(rows) do by_class[c]["m" .. r] = row.per_class[c] end
        end
        lines[#lines + 1] = fm.table(by_class, cols)
    end
    fm.write_markdown(results .. "/" .. NAME .. ".md", lines)
    fm.write_csv(results .. "/" .. NAME .. ".csv", rows,
                 {"model", "recipe", "n", "mean", "std", "min", "max", "per_seed"})
end

-- The test accuracy of every (model, seed) run, filled as runs finish; a
-- model's row is added once all its seeds are in.
local accs, classes_of = {}, {}
for _, name in ipairs(models) do accs[name], classes_of[name] = {}, {} end

-- A run's result: its test accuracy, and per class (the confusion matrix's
-- diagonal over its rows).
local function add_result(job, result)
    local got, classes = accs[job.model], classes_of[job.model]
    got[job.j] = result.acc
    classes[job.j] = result.per_class
    for j = 1, #seeds do if not got[j] then return end end
    local mean, std = mean_std(got)
    local per_seed, per_class = {}, {}
    for j, a in ipairs(got) do per_seed[j] = string.format("%.4f", a) end
    for c = 1, #fm.class_names do
        local xs = {}
        for j = 1, #seeds do xs[j] = classes[j][c] end
        per_class[c] = mean_std(xs)
    end
    rows[#rows + 1] = {
        model = job.model,
        recipe = DESCRIBE[job.model] or "",
        n = #got,
        test_acc = string.format("%.4f ± %.4f", mean, std),
        mean = mean,
        std = std,
        min = math.min(table.unpack(got)),
        max = math.max(table.unpack(got)),
        per_seed = table.concat(per_seed, " "),
        per_class = per_class,
    }
    write_results()
end

-- Every run is one item of fm.dist.map: one process trains them in order
-- (and writes the table after every model); under mpirun each rank trains
-- its share and rank 0 writes the table once all are done.
local jobs = {}
for i, name in ipairs(models) do
    for j, seed in ipairs(seeds) do jobs[#jobs + 1] = {model = name, i = i, seed = seed, j = j} end
end
local alone = fm.dist.size() == 1
local who = alone and "" or string.format("rank %d: ", fm.dist.rank())
sweep = fm.dist.broadcast(sweep)  -- one sweep id, rank 0's clock

local results_of = fm.dist.map(jobs, function(job)
    local name, seed = job.model, job.seed
    print(string.format("%s[%d/%d] %s, seed %d (%d of %d)", who, job.i, #models, name, seed, job.j,
                        #seeds))
    local options = {plugin = name, data = data, epochs = epochs, seed = seed, out = run_dir(name, seed),
                     threads = threads, quiet = quiet, sweep = sweep, runs_db = runs_db}
    for k, v in pairs(PROTOCOL) do options[k] = v end
    for k, v in pairs(RECIPES[name]) do options[k] = v end
    if fm.args.epochs ~= nil then options.epochs = epochs end
    local run = fm.train(options)
    local test = run:evaluate("test")
    run:close()
    local result = {acc = test.acc, per_class = {}}
    for c, row in ipairs(test.confusion) do
        local n = 0
        for _, count in ipairs(row) do n = n + count end
        result.per_class[c] = n > 0 and row[c] / n or 0
    end
    print(string.format("%s[%d/%d] %s, seed %d: test accuracy %.4f", who, job.i, #models, name,
                        seed, result.acc))
    if alone then add_result(job, result) end
    return result
end)
if fm.dist.rank() ~= 0 then return end
if not alone then
    for k, job in ipairs(jobs) do add_result(job, results_of[k]) end
end

print(string.format("wrote %s/%s.md and %s.csv", results, NAME, NAME))
local page = fm.runs.html{dir = string.format("%s/%s_dashboard", results, NAME), db = runs_db, sweep = sweep}
print(string.format("runs recorded in %s, sweep %s: fmhost runs list --runs-db %s --sweep %s",
                    runs_db, sweep, runs_db, sweep))
print("dashboard: " .. page)
