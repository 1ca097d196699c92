-- Memory monitoring (the spec's best practice 1), run for real: watch the heap grow while a
-- workload allocates, and fall when the collector frees it.
--
--   lua-system examples/memory_monitor.lua
local system = require("system")

local function monitor_memory(label)
  local stats, err = system.mem_stats()
  if err then error(err) end
  print(string.format("%-22s alloc %8.2f MB  heap objects %8d  GC cycles %4d  next GC at %8.2f MB",
    label, stats.alloc / 1024 / 1024, stats.heap_objects, stats.num_gc, stats.next_gc / 1024 / 1024))
end

monitor_memory("start")

local cache = {}
for round = 1, 5 do
  for i = 1, 40000 do
    cache[#cache + 1] = { id = i, name = "item" .. i }
  end
  monitor_memory("after round " .. round)
end

cache = nil
system.gc()
monitor_memory("after dropping cache")

local s = system.mem_stats()
print(string.format("process: sys %.1f MB, heap in use %.1f MB, resident %.1f MB (%s)",
  s.sys / 2 ^ 20, s.heap_in_use / 2 ^ 20, s.rss / 2 ^ 20, s.process_source))
