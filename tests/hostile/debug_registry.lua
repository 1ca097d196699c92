-- expect: survives
-- Every registry entry, one at a time, replaced with junk while the module, the collector, the
-- heap profiler and coroutines are used, then put back: the library's and the runner's C
-- functions check what they read there (the main thread, slots, messages, kept closures).
if not debug then
  print("survived")
  return
end
local registry = debug.getregistry()
local system = require("system")
local pcall, collectgarbage, pairs, co = pcall, collectgarbage, pairs, coroutine
local dying = co.create(function() end)
co.resume(dying)
local junk = { false, 42, "x", {}, setmetatable({}, { __index = error }), print, dying, io and io.stdout or true }
local function exercise()
  pcall(collectgarbage, "count")
  pcall(collectgarbage, "step")
  pcall(collectgarbage)
  for _, f in pairs(system) do pcall(f) end
  pcall(system.mem_stats, {})
  pcall(system.set_heap_profile_rate, 65536)
  local wrap = co.wrap(function() local t = {} for i = 1, 100 do t[i] = {} end co.yield(1) end)
  pcall(wrap)
  pcall(co.resume, co.create(function() return {} end))
  pcall(error, "x")
  local t = {}
  for i = 1, 200 do t[i] = { i } end
end
local keys = {}
for key in pairs(registry) do keys[#keys + 1] = key end
for _, key in ipairs(keys) do
  local kept = registry[key]
  for _, replacement in ipairs(junk) do
    registry[key] = replacement
    exercise()
    registry[key] = kept
  end
  registry[key] = nil
  exercise()
  registry[key] = kept
end
dying = nil
collectgarbage()
collectgarbage()
exercise()
print("survived")
