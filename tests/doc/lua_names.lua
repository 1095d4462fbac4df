-- lua_names.lua — every name the live `fm` module offers a script, one per line:
--
--   name fm.train          a function or a field of fm (fm.dist.map, fm.version, ...)
--   option fm.train epochs an option key of a function taking an options table
--   method run:evaluate    a method of an object (p, m, d, run: plugin, model,
--                          dataset, run)
--   key epoch              a key of a table the module returns or passes to a
--                          callback (run.history rows, run:evaluate(), p.hparams
--                          entries, on_step's argument, fm.runs.query rows, ...)
--
-- Run by tests/doc/check_lua_names.sh as `fmhost script lua_names.lua
-- data=DIR out=DIR`.  Options are read from the module itself: a function
-- given an unknown option lists the ones it knows in its error message.
local fm = require "fm"
local data, out = fm.args.data, fm.args.out

local seen = {}
local function emit(...)
    local line = table.concat({...}, " ")
    if not seen[line] then
        seen[line] = true
        print(line)
    end
end

-- fm itself, recursively (fm.dist, fm.runs); arrays (class_names) and
-- fm.args (the script's own arguments) are values, not names.
local functions = {}
local function walk(t, prefix)
    for k, v in pairs(t) do
        local name = prefix .. "." .. k
        emit("name", name)
        if type(v) == "function" then
            functions[#functions + 1] = {name, v}
        elseif type(v) == "table" and #v == 0 and name ~= "fm.args" then
            walk(v, name)
        end
    end
end
walk(fm, "fm")
table.sort(functions, function(a, b) return a[1] < b[1] end)

-- Options: call each function with an unknown key; one that checks its keys
-- answers "unknown option '...' (options: a, b, c)".  A required option
-- named by the error ("option 'dir' ... is required") is supplied and the
-- call made again.  Collectives and functions that do something with a table
-- are left out.
local UNKNOWN = "zz_not_an_option_zz"
local skip = {["fm.dist.map"] = true, ["fm.dist.gather"] = true, ["fm.dist.broadcast"] = true,
              ["fm.dist.barrier"] = true, ["fm.table"] = true}
for _, f in ipairs(functions) do
    local name, fn = f[1], f[2]
    if not skip[name] then
        local opts = {[UNKNOWN] = true}
        for _ = 1, 3 do
            local ok, err = pcall(fn, opts)
            err = tostring(err)
            local list = not ok and err:match("unknown option '" .. UNKNOWN .. "' %(options: (.-)%)")
            if list then
                for key in list:gmatch("[%w_]+") do emit("option", name, key) end
                break
            end
            local required = not ok and err:match("option '([%w_]+)'[^']* is required")
            if not required then break end
            opts[required] = out .. "/required"
        end
    end
end

-- Objects: their methods are the table behind __index (upvalue 1 of the
-- __index closure); their fields are served by C and not listed here (the
-- shell script reads them from the sources).
local function methods(obj, short)
    local index = getmetatable(obj).__index
    local _, t = debug.getupvalue(index, 1)
    for k in pairs(t) do emit("method", short .. ":" .. k) end
end
local function keys(t)
    for k, v in pairs(t) do
        if type(k) == "string" then emit("key", k) end
    end
end

local p = fm.plugin("mlp")
methods(p, "p")
for _, h in pairs(p.hparams) do keys(h) end
for _, x in pairs(fm.plugin("rescnn").exports) do keys(x) end
local m = p:model()
methods(m, "m")
local d = fm.dataset{dir = data, limit = 128}
methods(d, "d")

local step_keys, epoch_keys = {}, {}
local run = fm.train{plugin = p, data = d, epochs = 1, batch_size = 64, quiet = true,
                     out = out, sweep = "names",
                     on_step = function(s) step_keys = s end,
                     on_epoch = function(e) epoch_keys = e end}
methods(run, "run")
keys(step_keys)
keys(epoch_keys)
keys(run:evaluate("val"))
for _, row in ipairs(fm.runs.query{db = out .. "/runs.db"}) do
    keys(row)
    keys(row.per_class[1] or {})
    keys(row.artifacts[1] or {})
end
