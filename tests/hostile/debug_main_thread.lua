-- expect: survives
-- The registry's main thread replaced by a coroutine that is then collected, while the heap
-- profiler starts (from the main thread and from a coroutine): the profiler must not keep the
-- coroutine as the state's main thread and walk its freed stack at every sampled allocation.
if not debug then
  print("survived")
  return
end
local system = require("system")
local registry = debug.getregistry()
local main = registry[1]
local function swapped(start)
  local co = coroutine.create(function() end)
  registry[1] = co
  pcall(start)
  registry[1] = main
end
swapped(function() coroutine.wrap(function() system.set_heap_profile_rate(1) end)() end)
swapped(function() system.set_heap_profile_rate(1) end)
collectgarbage()
collectgarbage()
-- The freed coroutine's memory reused by strings of about its size, while every allocation is
-- sampled.
local keep = {}
for i = 1, 2000 do keep[i] = string.rep(string.char(i % 200 + 40), 180 + i % 64) end
print("survived")
