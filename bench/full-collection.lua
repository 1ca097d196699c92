-- A full collection of a big live heap, timed in the script: the collector walks every live
-- object, so this measures how the allocator laid them out (BENCHMARKS.md, "Full collections
-- and the allocator"). Best of 5 collections, after one that settles the heap.
--
--   lua-system bench/full-collection.lua tables    2.1M two-slot tables (about 240 MB)
--   lua-system bench/full-collection.lua mixed     700K tables, each with a string and a closure
--
-- Runs in any Lua 5.3+ (`lua5.4 bench/full-collection.lua tables` for the yardstick).
local HEAPS = {
  tables = function()
    local t = {}
    for i = 1, 2100000 do t[i] = { i, i + 1 } end
    return t
  end,
  mixed = function()
    local t = {}
    for i = 1, 700000 do
      local s = "key" .. i
      t[i] = { s, function() return s end, x = i }
    end
    return t
  end,
}

local make = HEAPS[arg[1] or "tables"] or error("usage: full-collection.lua tables|mixed")
local live = make()
collectgarbage()
local best = math.huge
for _ = 1, 5 do
  local start = os.clock()
  collectgarbage()
  best = math.min(best, os.clock() - start)
end
print(string.format("%s: full collection of %d MB live: %.1f ms (best of 5)", arg[1] or "tables",
  collectgarbage("count") // 1024, best * 1000))
assert(#live > 0)
