-- next_gc is where the next cycle really starts, and set_gc_percent applies at once (as Go's
-- SetGCPercent does): predicted against observed, in the modes each version has.
--
-- Observed: the script makes garbage in small steps, reading allocated() (which allocates
-- nothing) after each, and notes the largest heap seen before num_gc moves. A cycle starts
-- when the heap reaches the threshold, so that peak is at least next_gc (less one step), and
-- at most next_gc plus what the script allocated while the cycle ran; the collector is made
-- to finish its cycles quickly (a large step multiplier) so that this is small.
local T = require("testing")
local system = require("system")

local STEP = 64 -- bytes of garbage between two readings, about
local SLACK = 0.5 -- the cycle's own growth, as a fraction of the threshold

-- Makes the collector finish each cycle in few steps, where the version lets a script.
local function fast_cycles()
  if T.version == "5.4" then collectgarbage("incremental", 0, 1000, 0)
  elseif T.version == "5.5" then collectgarbage("incremental"); collectgarbage("param", "stepmul", 2000)
  elseif not T.luajit or true then pcall(collectgarbage, "setstepmul", 1000) end
end

-- Grows garbage until a cycle ends; returns the largest heap seen before it, and next_gc as
-- read just before the growth started.
local stats = system.mem_stats() -- refilled below: reading makes no garbage
local ring = {}
for i = 1, 64 do ring[i] = false end

local function next_cycle()
  system.mem_stats(stats)
  local predicted, n0, source = stats.next_gc, stats.num_gc, stats.next_gc_source
  local peak = 0
  local i = 0
  repeat
    i = i + 1
    ring[i % 64 + 1] = { i, i } -- about 64 bytes of garbage
    local heap = system.allocated()
    if heap > peak then peak = heap end
  until system.mem_stats(stats).num_gc ~= n0 or i > 5e6
  return peak, predicted, source
end

local function check(label, peak, predicted, source)
  local note = string.format("%s: next_gc %d (%s), the cycle started at about %d", label, predicted, source, peak)
  print("   " .. note)
  if source == "threshold" then
    T.check(peak >= predicted - 4 * STEP, note .. ": started before next_gc (overstated)")
    T.check(peak <= predicted * (1 + SLACK) + 4 * STEP, note .. ": started long after next_gc (understated)")
  else
    -- Estimated from the heap when the last cycle's finalizers ran (docs/figures.md): never
    -- below what Lua will use, by at most what the script allocated during the last sweep.
    T.eq(source, "estimate")
    T.check(peak >= predicted * 0.5, note .. ": far off")
  end
end

T.without_jit(function()
  fast_cycles()

  T.test("next_gc is where the next cycle starts", function()
    system.gc()
    for round = 1, 3 do
      check("cycle " .. round, next_cycle())
    end
  end)

  T.test("set_gc_percent applies at once: a larger percent pushes the cycle being waited for", function()
    system.gc()
    local live = system.allocated()
    system.set_gc_percent(400)
    local peak, predicted, source = next_cycle()
    check("percent 400", peak, predicted, source)
    if source == "threshold" then
      T.check(peak >= live * 4, string.format("the heap grew to %d, 5x the live %d, before a cycle", peak, live))
    end
    system.set_gc_percent(T.default_percent)
  end)

  T.test("set_gc_percent applies at once: a smaller percent brings it closer", function()
    system.set_gc_percent(300)
    system.gc()
    local live = system.allocated()
    system.set_gc_percent(20)
    local peak, predicted, source = next_cycle()
    check("percent 20", peak, predicted, source)
    if source == "threshold" then
      T.check(peak <= live * 1.6, string.format("a cycle ran by %d, 1.2x the live %d", peak, live))
    end
    system.set_gc_percent(T.default_percent)
  end)

  T.test("next_gc is a threshold in generational mode too", function()
    if T.version ~= "5.4" and T.version ~= "5.5" then return end
    collectgarbage("generational")
    system.gc()
    for round = 1, 3 do
      check("generational " .. round, next_cycle())
    end
    collectgarbage("incremental")
  end)
end)

T.done()
