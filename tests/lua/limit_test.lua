-- set_memory_limit and get_memory_limit: Go's debug.SetMemoryLimit for the state.
local T = require("testing")
local system = require("system")

local MB = 1024 * 1024
-- A stock LuaJIT (system.so) refuses a limit: its own failure path crashes at one. The
-- runner's vendored LuaJIT takes one in both of its states.
local REFUSED = T.luajit and T.stock

T.test("a stock LuaJIT refuses a limit, and says why", function()
  if not REFUSED then return end
  T.fails("set_memory_limit", system.set_memory_limit, { n = 1, 10 * MB },
    "set_memory_limit: not available in a stock LuaJIT")
  T.eq(system.get_memory_limit(), -1)
end)

T.test("no limit by default: -1", function()
  T.eq(system.get_memory_limit(), -1)
end)

T.test("past the limit, allocations fail with a catchable error; freeing makes room", function()
  if REFUSED then return end
  collectgarbage()
  local limit = system.allocated() + 4 * MB
  T.eq(system.set_memory_limit(limit), -1, "previous: none")
  T.eq(system.get_memory_limit(), limit)
  local ok, err = pcall(string.rep, "x", 16 * MB)
  T.eq(ok, false, "16 MB past a 4 MB margin")
  T.check(tostring(err):find("not enough memory", 1, true), tostring(err))
  collectgarbage() -- Lua 5.1 does not collect by itself when an allocation fails
  local kept = string.rep("y", MB)
  T.eq(#kept, MB, "within the limit")
  T.eq(system.set_memory_limit(-1), limit, "removed; the previous one is returned")
  local big = string.rep("z", 16 * MB)
  T.eq(#big, 16 * MB, "no limit any more")
end)

-- A limit below what is in use is tested from Rust (tests/api.rs): there, nothing can grow,
-- not even the Lua stack of the call that would lift the limit, so the host lifts it.

T.test("the module's own answers survive an exhausted state", function()
  if REFUSED then return end
  collectgarbage()
  system.set_memory_limit(system.allocated())
  -- Values that need memory answer nil and Lua's memory error instead of raising.
  local stats, err = system.mem_stats()
  local number = system.allocated()
  system.set_memory_limit(-1)
  T.check(stats == nil and type(err) == "string" or type(stats) == "table", "mem_stats answered")
  T.check(T.is_integer(number), "integers need no memory")
end)

T.test("bad limits are refused and change nothing", function()
  local before = system.get_memory_limit()
  T.fails("set_memory_limit", system.set_memory_limit, { n = 0 }, "bad argument #1 to 'set_memory_limit' (number expected, got no value)")
  T.fails("set_memory_limit", system.set_memory_limit, { n = 1, "1G" }, "number expected, got string")
  T.fails("set_memory_limit", system.set_memory_limit, { n = 1, 1.5 }, "integer expected, got 1.5")
  T.fails("set_memory_limit", system.set_memory_limit, { n = 1, 0 / 0 }, "integer expected, got " .. tostring(0 / 0))
  T.fails("set_memory_limit", system.set_memory_limit, { n = 1, -2 }, "value out of range: -1 for no limit")
  T.fails("set_memory_limit", system.set_memory_limit, { n = 1, -1e300 }, "value out of range")
  T.eq(system.get_memory_limit(), before, "unchanged")
  -- Huge limits are clamped to 2^63 - 1 bytes: no limit in practice.
  if REFUSED then return end
  system.set_memory_limit(1e300)
  T.check(system.get_memory_limit() >= 2 ^ 62, "clamped")
  system.set_memory_limit(-1)
end)

T.done()
