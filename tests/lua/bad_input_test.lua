-- Every function against bad input: wrong types, missing arguments, nil, NaN, +-inf,
-- fractions, huge and negative numbers. Bad input answers nil and a message naming the
-- function and the argument, never raises, never changes state.
local T = require("testing")
local system = require("system")

local NAN = 0 / 0
local INF = math.huge

-- The state a bad call must leave unchanged.
local function settings()
  local ok, running = pcall(collectgarbage, "isrunning") -- not in Lua 5.1
  return { percent = system.get_gc_percent(), procs = system.go_max_procs(), running = ok and running }
end

local function unchanged(before, what)
  local after = settings()
  T.eq(after.percent, before.percent, what .. ": gc percent unchanged")
  T.eq(after.procs, before.procs, what .. ": max procs unchanged")
  T.eq(after.running, before.running, what .. ": collector state unchanged")
end

local function fails(name, args, ...)
  local before = settings()
  local ok, message = pcall(T.fails, name, system[name], args, ...)
  if not ok then error(message, 2) end
  unchanged(before, name)
  return message
end

local WRONG_TYPES = {
  { "a string", "fast", "got string" },
  { "a numeric string", "50", "got string" },
  { "a table", {}, "got table" },
  { "a boolean", true, "got boolean" },
  { "a function", print, "got function" },
  { "a coroutine", coroutine.create(function() end), "got thread" },
  { "userdata", io.stdout, "got userdata" },
}

T.test("set_gc_percent refuses a missing argument and nil", function()
  fails("set_gc_percent", { n = 0 }, "bad argument #1 to 'set_gc_percent'", "number expected, got no value")
  fails("set_gc_percent", { n = 1, nil }, "bad argument #1 to 'set_gc_percent'", "number expected, got nil")
end)

T.test("set_gc_percent refuses wrong types, with Lua's message", function()
  for _, case in ipairs(WRONG_TYPES) do
    local message = fails("set_gc_percent", { n = 1, case[2] }, "bad argument #1 to 'set_gc_percent'", case[3])
    if case[1] == "a string" then
      T.eq(message, "bad argument #1 to 'set_gc_percent' (number expected, got string)")
    end
  end
end)

T.test("set_gc_percent refuses NaN, infinities and fractions", function()
  fails("set_gc_percent", { n = 1, NAN }, "bad argument #1 to 'set_gc_percent'", "integer expected, got " .. tostring(NAN))
  fails("set_gc_percent", { n = 1, INF }, "integer expected, got inf")
  fails("set_gc_percent", { n = 1, -INF }, "integer expected, got -inf")
  fails("set_gc_percent", { n = 1, 1.5 }, "integer expected, got 1.5")
  fails("set_gc_percent", { n = 1, -0.25 }, "integer expected, got -0.25")
end)

T.test("set_gc_percent accepts integral floats and clamps huge values", function()
  T.eq(system.set_gc_percent(50.0), T.default_percent)
  T.eq(system.get_gc_percent(), 50)
  T.eq(system.set_gc_percent(2 ^ 63), 50)
  T.eq(system.get_gc_percent(), T.percent_max)
  T.eq(system.set_gc_percent(T.mininteger), T.percent_max)
  T.eq(system.get_gc_percent(), -1)
  system.set_gc_percent(T.default_percent)
end)

T.test("go_max_procs refuses wrong types, zero, negatives, fractions, NaN, infinities", function()
  for _, case in ipairs(WRONG_TYPES) do
    fails("go_max_procs", { n = 1, case[2] }, "bad argument #1 to 'go_max_procs'", case[3])
  end
  fails("go_max_procs", { n = 1, 0 }, "bad argument #1 to 'go_max_procs'", "must be at least 1, got 0")
  fails("go_max_procs", { n = 1, -3 }, "must be at least 1, got -3")
  fails("go_max_procs", { n = 1, T.mininteger }, "must be at least 1")
  fails("go_max_procs", { n = 1, -1e300 }, "must be at least 1")
  fails("go_max_procs", { n = 1, 1.5 }, "integer expected, got 1.5")
  -- Numbers are quoted as Lua's tostring shows them (NaN prints as -nan on x86-64 Linux).
  fails("go_max_procs", { n = 1, NAN }, "integer expected, got " .. tostring(NAN))
  fails("go_max_procs", { n = 1, -1e300 }, "must be at least 1, got " .. tostring(-1e300))
  fails("go_max_procs", { n = 1, INF }, "integer expected, got inf")
  fails("go_max_procs", { n = 1, -INF }, "integer expected, got -inf")
end)

T.test("functions without parameters ignore extra arguments, as Lua's own do", function()
  local junk = { "x", {}, NAN, INF, -1, 1.5, true }
  local names = { "allocated", "get_gc_percent", "num_goroutines", "num_cpu", "hostname", "pid", "gc", "metrics" }
  names[#names + 1] = "heap_objects"
  for _, name in ipairs(names) do
    for _, value in ipairs(junk) do
      T.ok(name, system[name], value)
    end
  end
end)

T.test("mem_stats takes nothing, nil or a table to refill", function()
  for _, case in ipairs(WRONG_TYPES) do
    if type(case[2]) ~= "table" then
      fails("mem_stats", { n = 1, case[2] }, "bad argument #1 to 'mem_stats' (table expected, " .. case[3] .. ")")
    end
  end
  fails("mem_stats", { n = 1, 1.5 }, "table expected, got number")
  fails("mem_stats", { n = 1, 0 / 0 }, "table expected, got number")
  T.eq(type(T.ok("mem_stats", system.mem_stats, nil)), "table")
  local t = {}
  T.eq(T.ok("mem_stats", system.mem_stats, t), t, "the same table, filled")
  T.check(t.alloc > 0, "filled")
end)

T.test("functions survive being called with a wrong self (method syntax)", function()
  T.ok("allocated", system.allocated, system)
  fails("set_gc_percent", { n = 1, system }, "got table")
end)

T.done()
