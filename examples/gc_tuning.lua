-- GC tuning (the spec's best practice 2), run for real: the same workload under three GC
-- percents. A lower percent collects more often and keeps the heap smaller.
--
--   lua-system examples/gc_tuning.lua
local system = require("system")

local function workload()
  local live = {}
  for i = 1, 200000 do
    live[i % 5000 + 1] = { i, tostring(i) } -- 5000 live objects, the rest garbage
  end
end

-- The percent is Go's GOGC: in Lua, the incremental collector's pause. Lua 5.4 and 5.5 start
-- in generational mode, where the percent decides only when a minor collection becomes a major
-- one (docs/figures.md, "The collector"): the example runs in incremental mode.
local mode_before = (_VERSION == "Lua 5.4" or _VERSION == "Lua 5.5") and collectgarbage("incremental")

local original, err = system.get_gc_percent()
if err then error(err) end

print(string.format("%8s %10s %14s %12s", "percent", "cycles", "peak heap KB", "seconds"))
for _, percent in ipairs({ 25, 100, 400 }) do
  system.set_gc_percent(percent)
  system.gc()
  local before = system.mem_stats()
  local peak = before.alloc
  local start = os.clock()
  -- Sample the heap while the workload runs, from a count hook.
  debug.sethook(function() local a = system.allocated() if a > peak then peak = a end end, "", 1000)
  workload()
  debug.sethook()
  local after = system.mem_stats()
  print(string.format("%8d %10d %14.0f %12.3f", percent, after.num_gc - before.num_gc, peak / 1024, os.clock() - start))
end

-- Restore the original setting.
system.set_gc_percent(original)
print("restored GC percent:", system.get_gc_percent())
if mode_before then collectgarbage(mode_before) end
