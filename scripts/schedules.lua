-- schedules.lua — one model under four learning-rate schedules, each with
-- augmentation off and on: eight runs, one table, one plot.
--
--   fmhost script scripts/schedules.lua                  cnn, 20 epochs per run
--   fmhost script scripts/schedules.lua model=mlp epochs=3 limit=2000
--
-- Arguments (KEY=VALUE, all optional):
--   model=cnn      the model (any plugin name or path)
--   epochs=20  limit=0  seed=42  data=DIR  out=.  threads=0  quiet=false
--
-- Writes OUT/results/schedules.md, schedules.csv and schedules_val_acc.png
-- (validation accuracy of every run), again after every run.  Each run's
-- artifacts go to OUT/runs/schedules/<schedule>-<aug|noaug>/.

local fm = require "fm"

local function int_arg(name, default)
    local v = fm.args[name]
    if v == nil then return default end
    if math.type(v) ~= "integer" or v < 0 then
        error(string.format("%s=%s: expected a whole number >= 0", name, tostring(v)), 0)
    end
    return v
end

local model = tostring(fm.args.model or "cnn")
local epochs = int_arg("epochs", 20)
local limit = int_arg("limit", 0)
local seed = int_arg("seed", 42)
local threads = int_arg("threads", 0)
local out = tostring(fm.args.out or ".")
local quiet = fm.args.quiet == true
local base_lr = 1e-3

-- A schedule written in Lua: fm.train calls it before every step with the
-- epoch (from 1), the step within the epoch (from 0) and the base rate.  This
-- one decays the rate by 20% per epoch: smooth like cosine early on, but it
-- never reaches zero.
local function exponential(epoch, step, lr)
    return lr * 0.8 ^ (epoch - 1)
end

local SCHEDULES = {
    {name = "constant", options = {scheduler = "constant"}, about = "the base rate throughout"},
    {name = "step", options = {scheduler = "step", step_size = math.max(1, epochs // 3), gamma = 0.2},
     about = string.format("x0.2 every %d epochs", math.max(1, epochs // 3))},
    {name = "cosine", options = {scheduler = "cosine"}, about = "toward 0, reached one epoch after the last"},
    {name = "lua", options = {schedule = exponential}, about = "x0.8 per epoch, a Lua function"},
}

local COLUMNS = {
    {"schedule", "schedule"},
    {"description", "how"},
    {"augment", "augmentation"},
    {"epochs", "epochs run"},
    {"best_epoch", "best epoch"},
    {key = "val_acc", title = "val acc", format = "%.4f"},
    {key = "test_acc", title = "test acc", format = "%.4f"},
    {key = "train_seconds", title = "train time (s)", format = "%.1f"},
}

local results = out .. "/results"
local data = fm.dataset{dir = fm.args.data, seed = seed, limit = limit}
local rows, curves = {}, {}
local total = #SCHEDULES * 2

local function write_results()
    local lines = {
        string.format("# FashionMNIST: learning-rate schedules for %s", model),
        "",
        string.format("Adam, base lr %g, batch 64, at most %d epochs, early stopping (patience 5), "
                      .. "seed %d%s.  Augmentation: random crop of the image padded by 2, and "
                      .. "horizontal flip.", base_lr, epochs, seed,
                      limit > 0 and string.format(", training on the first %d images", limit) or ""),
        "",
        fm.table(rows, COLUMNS),
    }
    if #rows < total then
        lines[#lines + 1] = string.format("Partial results: %d of %d runs done.", #rows, total)
    end
    fm.write_markdown(results .. "/schedules.md", lines)
    fm.write_csv(results .. "/schedules.csv", rows,
                 {"schedule", "description", "augment", "epochs", "best_epoch", "val_acc", "test_acc", "train_seconds"})
    fm.plot{
        file = results .. "/schedules_val_acc.png",
        title = "Validation accuracy of " .. model .. " per schedule",
        xlabel = "epoch",
        ylabel = "validation accuracy",
        series = curves,
    }
end

for _, augment in ipairs({false, true}) do
    for _, schedule in ipairs(SCHEDULES) do
        local label = schedule.name .. (augment and " +aug" or "")
        print(string.format("[%d/%d] %s: %s schedule%s", #rows + 1, total, model, schedule.name,
                            augment and ", augmented" or ""))
        local options = {
            plugin = model, data = data, epochs = epochs, lr = base_lr, augment = augment,
            out = string.format("%s/runs/schedules/%s-%s", out, schedule.name,
                                augment and "aug" or "noaug"),
            threads = threads, quiet = quiet,
        }
        for k, v in pairs(schedule.options) do options[k] = v end
        local run = fm.train(options)

        rows[#rows + 1] = {
            schedule = schedule.name,
            description = schedule.about,
            augment = augment and "crop+flip" or "none",
            epochs = run.epochs,
            best_epoch = run.best_epoch,
            val_acc = run.best.val_acc,
            test_acc = run:evaluate("test").acc,
            train_seconds = run.seconds,
        }
        local val_acc = {}
        for epoch, m in ipairs(run.history) do val_acc[epoch] = m.val_acc end
        curves[#curves + 1] = {name = label, y = val_acc}
        write_results()
        print(string.format("[%d/%d] %s: test accuracy %.4f", #rows, total, label, rows[#rows].test_acc))
    end
end

print("wrote " .. results .. "/schedules.md, schedules.csv and schedules_val_acc.png")
