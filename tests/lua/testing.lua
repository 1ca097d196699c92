-- A small test harness for the Lua test scripts: each script calls `test(name, fn)` for its
-- cases and `done()` at the end, which exits non-zero if any case failed.

local T = {}
local passed, failed = 0, 0

-- What runs these tests: the Lua version ("5.1" .. "5.5"), LuaJIT, and how the module accounts
-- the state's memory ("exact" or "interposed"; see docs/figures.md).
T.version = _VERSION:match("%d+%.%d+")
T.luajit = type(jit) == "table"
T.accounting = require("system").mem_stats().accounting
T.exact = T.accounting == "exact"
-- system.so in a stock interpreter (scripts/test-interpreters says so), not the runner.
T.stock = os.getenv("LUA_SYSTEM_TEST_STOCK") == "1"
-- Whether the module reads the collector's internals in this state (docs/figures.md).
T.internals = require("system").mem_stats().next_gc_source == "threshold"

-- Portability across Lua 5.1 to 5.5 and LuaJIT.
T.pack = table.pack or function(...) return { n = select("#", ...), ... } end
T.unpack = table.unpack or unpack
T.maxinteger = math.maxinteger or 2 ^ 63 -- where numbers are doubles, 2^63 is what a maximal integer becomes
-- `next_gc` while the collector is stopped: the largest integer, exact (2^53 where numbers are doubles).
T.stopped_next_gc = math.maxinteger or 2 ^ 53
T.mininteger = math.mininteger or -2 ^ 63

function T.idiv(a, b) return math.floor(a / b) end

-- An integer: a Lua integer where Lua has them (5.3 and later), an integral number elsewhere.
function T.is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

-- An object whose finalizer calls fn (tables take __gc from Lua 5.2 on, userdata always).
function T.with_finalizer(fn)
  if newproxy then
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = fn
    return proxy
  end
  return setmetatable({}, { __gc = fn })
end

-- Runs f with LuaJIT's compiler off: its traces are allocations of the state too, which would
-- blur exact object counts.
function T.without_jit(f)
  if not T.luajit then return f() end
  jit.off()
  jit.flush()
  local ok, err = pcall(f)
  jit.on()
  if not ok then error(err, 0) end
end

-- Runs f with the collector stopped through the module (set_gc_percent(-1)), then restores the
-- setting: exact deltas and comparisons need no cycle to run meanwhile.
function T.without_collector(f)
  local system = require("system")
  local percent = system.set_gc_percent(-1)
  local ok, err = pcall(f)
  system.set_gc_percent(percent)
  if not ok then error(err, 0) end
end

-- Runs f with the collector in incremental mode (Lua 5.4 and 5.5 have two modes, and their
-- lua.c starts in generational mode), then restores the mode.
function T.incremental(f)
  if T.version ~= "5.4" and T.version ~= "5.5" then return f() end
  local previous = collectgarbage("incremental")
  local ok, err = pcall(f)
  collectgarbage(previous)
  if not ok then error(err, 0) end
end

-- The largest GC percent each version's collector can store (README, "set_gc_percent").
T.percent_max = ({ ["5.4"] = 920, ["5.5"] = 396700 })[T.version] or 1000000
if T.luajit then T.percent_max = 1000000 end
-- The collector's mode when the script started: lua.c of 5.4 and 5.5 (and the runner) start
-- generational. Switching back to generational runs a full collection, harmless here.
T.initial_mode = "incremental"
if (T.version == "5.4" or T.version == "5.5") and not T.luajit then
  T.initial_mode = collectgarbage("incremental")
  collectgarbage(T.initial_mode)
end
-- Lua's default setting as a GC percent, in the initial mode: the pause (5.5: 250, GOGC 150),
-- or in generational mode 5.4's major multiplier (100) and 5.5's minor-major multiplier
-- (LUAI_MINORMAJOR 70 in 5.5.1, stored as an 8-bit float that stands for 68.75%: 68).
T.default_pause_percent = T.version == "5.5" and 150 or 100
T.default_percent = 100
if T.version == "5.5" then T.default_percent = T.initial_mode == "generational" and 68 or 150 end

function T.test(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    passed = passed + 1
    print("ok - " .. name)
  else
    failed = failed + 1
    print("not ok - " .. name .. "\n" .. tostring(err))
  end
end

function T.done()
  print(string.format("%d passed, %d failed", passed, failed))
  if failed > 0 then os.exit(1) end
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function T.eq(actual, expected, what)
  if actual ~= expected then
    error(string.format("%s: expected %s, got %s", what or "value", show(expected), show(actual)), 2)
  end
end

function T.check(cond, what)
  if not cond then error(what or "check failed", 2) end
end

-- Calls f(...) and returns its results as a table with n = the number of results.
function T.results(f, ...)
  return T.pack(f(...))
end

-- The function succeeded: exactly two results, a value and nil. Returns the value.
function T.ok(name, f, ...)
  local r = T.pack(f(...))
  if r.n ~= 2 or r[1] == nil or r[2] ~= nil then
    error(string.format("%s: expected value, nil; got %d results: %s, %s", name, r.n, show(r[1]), show(r[2])), 2)
  end
  return r[1]
end

-- The function failed: exactly two results, nil and a message containing every pattern
-- (plain text). Returns the message.
function T.fails(name, f, args, ...)
  local r = T.pack(f(T.unpack(args, 1, args.n or #args)))
  if r.n ~= 2 or r[1] ~= nil or type(r[2]) ~= "string" then
    error(string.format("%s: expected nil, message; got %d results: %s, %s", name, r.n, show(r[1]), show(r[2])), 2)
  end
  for _, pattern in ipairs({ ... }) do
    if not r[2]:find(pattern, 1, true) then
      error(string.format("%s: message %s lacks %s", name, show(r[2]), show(pattern)), 2)
    end
  end
  return r[2]
end

return T
