-- expect: limit
-- Coroutines made after the budget is spent must not get a fresh allowance (nested without
-- end, they may reach the memory limit first: LuaJIT).
local create, resume = coroutine.create, coroutine.resume
local function spawn()
  while true do
    for _ = 1, 50 do end
    resume(create(spawn))
  end
end
while true do resume(create(spawn)) end
