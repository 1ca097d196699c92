-- gc, set_gc_percent, get_gc_percent and cycle counting.
local T = require("testing")
local system = require("system")

T.test("a fresh state answers Go's default GOGC, 100", function()
  T.eq(system.get_gc_percent(), 100)
end)

T.test("gc() is a full collection: true, nil; num_gc grows; garbage is freed", function()
  local garbage = {}
  for i = 1, 10000 do garbage[i] = { i } end
  garbage = nil
  local before = system.mem_stats()
  T.eq(T.ok("gc", system.gc), true)
  local after = system.mem_stats()
  T.check(after.num_gc >= before.num_gc + 1, "num_gc grew")
  T.check(after.alloc < before.alloc - 10000 * 16, "garbage freed")
  T.check(after.last_gc > 0, "last_gc set")
end)

T.test("automatic cycles are counted too", function()
  local before = system.mem_stats().num_gc
  for i = 1, 200000 do local _ = { i } end -- garbage only: the collector runs by itself
  T.check(system.mem_stats().num_gc > before, "automatic cycles counted")
end)

T.test("explicit and automatic cycles match collectgarbage's own view of a cycle", function()
  -- Every collectgarbage("collect") is one full cycle: the count grows by at least one each time.
  local before = system.mem_stats().num_gc
  for _ = 1, 5 do collectgarbage("collect") end
  T.check(system.mem_stats().num_gc >= before + 5, "five full cycles")
end)

T.test("with no automatic cycle running, each gc() is exactly one cycle", function()
  system.set_gc_percent(-1)
  system.gc() -- may also finish a cycle that was under way: that one counts too
  local before = system.mem_stats().num_gc
  for _ = 1, 10 do system.gc() end
  T.eq(system.mem_stats().num_gc - before, 10, "cycles counted")
  system.set_gc_percent(100)
end)

T.test("set_gc_percent(x) then get_gc_percent() answers x, for every x in 0..900", function()
  local original = system.get_gc_percent()
  for x = 0, 900 do
    system.set_gc_percent(x)
    local got = system.get_gc_percent()
    if got ~= x then error(string.format("set %d, got %d", x, got)) end
  end
  T.eq(system.set_gc_percent(original), 900, "set returns the previous value")
end)

T.test("the effective percent is what Lua stores: multiples of 4", function()
  for _, x in ipairs({ 0, 1, 3, 4, 5, 50, 99, 101, 919, 920 }) do
    system.set_gc_percent(x)
    local s = system.mem_stats()
    T.eq(s.gc_percent, x, "gc_percent")
    T.eq(s.gc_percent_effective, x // 4 * 4, "effective for " .. x)
  end
  system.set_gc_percent(100)
end)

T.test("percents Lua cannot store are clamped to 920", function()
  T.eq(system.set_gc_percent(5000), 100)
  T.eq(system.get_gc_percent(), 920)
  T.eq(system.set_gc_percent(1e300), 920, "huge floats clamp too")
  T.eq(system.get_gc_percent(), 920)
  T.eq(system.set_gc_percent(math.maxinteger), 920)
  system.set_gc_percent(100)
end)

T.test("a negative percent stops the collector; -1 reads back, as in Go", function()
  T.eq(system.set_gc_percent(-1), 100)
  T.eq(system.get_gc_percent(), -1)
  T.eq(collectgarbage("isrunning"), false, "Lua's collector is stopped")
  local s = system.mem_stats()
  T.eq(s.next_gc, math.maxinteger, "no cycle scheduled")
  T.eq(s.gc_percent_effective, -1)
  T.eq(system.set_gc_percent(-50), -1, "still off")
  T.eq(system.set_gc_percent(-1e300), -1, "huge negatives mean off too")
  local before = system.mem_stats().num_gc
  for i = 1, 100000 do local _ = { i } end
  T.eq(system.mem_stats().num_gc, before, "no automatic cycle while stopped")
  T.eq(system.set_gc_percent(70), -1, "restarting returns -1")
  T.eq(collectgarbage("isrunning"), true)
  T.eq(system.get_gc_percent(), 70)
  system.set_gc_percent(100)
end)

T.test("the spec's GC tuning example restores the original setting", function()
  local original, err = system.get_gc_percent()
  if err then error(err) end
  system.set_gc_percent(50)
  local work = {}
  for i = 1, 10000 do work[i] = tostring(i) end
  system.set_gc_percent(original)
  T.eq(system.get_gc_percent(), original)
end)

T.test("gc() works while the collector is stopped, and leaves it stopped", function()
  system.set_gc_percent(-1)
  local before = system.mem_stats().num_gc
  T.eq(system.gc(), true)
  T.check(system.mem_stats().num_gc > before, "counted")
  T.eq(system.get_gc_percent(), -1)
  system.set_gc_percent(100)
end)

T.test("changes made outside the module are reported", function()
  collectgarbage("setpause", 300) -- deprecated but still in Lua 5.4
  T.eq(system.get_gc_percent(), 200, "pause 300 is GOGC 200")
  collectgarbage("stop")
  T.eq(system.get_gc_percent(), -1)
  collectgarbage("restart")
  collectgarbage("setpause", 50)
  T.eq(system.get_gc_percent(), 0, "a pause under 100 reads as 0")
  system.set_gc_percent(100)
  T.eq(collectgarbage("setpause", 200), 200, "set_gc_percent(100) is pause 200")
end)

T.test("generational mode: the percent applies, the mode stays", function()
  collectgarbage("generational")
  T.eq(system.set_gc_percent(60), 100)
  T.eq(system.get_gc_percent(), 60)
  T.eq(collectgarbage("incremental"), "generational", "still generational after set_gc_percent")
  system.set_gc_percent(100)
end)

T.test("next_gc is positive and moves with the percent", function()
  system.gc()
  local low = (function() system.set_gc_percent(20); return system.mem_stats() end)()
  local high = (function() system.set_gc_percent(400); return system.mem_stats() end)()
  T.check(low.next_gc > 0 and high.next_gc > low.next_gc, "ordered")
  system.set_gc_percent(100)
end)

T.done()
