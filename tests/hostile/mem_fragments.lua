-- expect: limit
-- Fragmentation: for each small size class, fill the heap to the limit with strings of that
-- class, keep one in sixteen and drop the rest. The live heap stays under the limit; without
-- the limit counting resident pages, the half-empty slabs of every class stayed resident
-- (16 MiB limit: 213 MB resident).
local kept, n = {}, 0
local size = 16
while size <= 4096 do
  local batch, count = {}, 0
  pcall(function()
    while true do
      count = count + 1
      batch[count] = string.rep("x", size - 30) .. count
    end
  end)
  pcall(function()
    for i = 1, count, 16 do n = n + 1; kept[n] = batch[i] end
  end)
  batch = nil
  collectgarbage()
  size = size + math.floor(size / 4) + 1
end
print("kept " .. n)
