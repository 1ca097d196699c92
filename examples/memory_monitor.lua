-- Memory monitoring (the spec's best practice 1), run for real: watch the heap while a workload
-- makes short-lived garbage (the collector's saw-tooth), then builds a cache that stays live
-- (the heap grows), then drops it (the heap falls after a collection).
--
--   lua-system examples/memory_monitor.lua
--   lua-system --mem-profile memory.svg examples/memory_monitor.lua   # the same, as a chart
--   lua-system --gctrace examples/memory_monitor.lua                  # a line per GC cycle
local system = require("system")

local function monitor_memory(label)
  local stats, err = system.mem_stats()
  if err then error(err) end
  print(string.format("%-22s alloc %8.2f MB  heap objects %8d  GC cycles %4d  next GC at %8.2f MB",
    label, stats.alloc / 1024 / 1024, stats.heap_objects, stats.num_gc, stats.next_gc / 1024 / 1024))
end

monitor_memory("start")

-- Short-lived garbage: each batch is dropped before the next, so automatic cycles free it.
for batch = 1, 3 do
  for _ = 1, 8 do
    local scratch = {}
    for i = 1, 20000 do
      scratch[i] = { i, tostring(i) }
    end
  end
  monitor_memory("after garbage batch " .. batch)
end

-- A cache that stays live: the heap grows, and each cycle's target with it.
local cache = {}
for round = 1, 5 do
  for i = 1, 40000 do
    cache[#cache + 1] = { id = i, name = "item" .. i }
  end
  monitor_memory("after cache round " .. round)
end

cache = nil
system.gc()
monitor_memory("after dropping cache")

local s = system.mem_stats()
print(string.format("process: sys %.1f MB, heap in use %.1f MB, resident %.1f MB (%s)",
  s.sys / 2 ^ 20, s.heap_in_use / 2 ^ 20, s.rss / 2 ^ 20, s.process_source))
