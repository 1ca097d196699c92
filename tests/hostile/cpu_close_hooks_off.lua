-- expect: cpu
-- Lua 5.4 and later: a coroutine that dies of the budget's error keeps its hooks off; its
-- __close handlers must not run then (through coroutine.wrap or coroutine.close).
local f = (loadstring or load)([[
  local wrapped = coroutine.wrap(function()
    local guard <close> = setmetatable({}, { __close = function() while true do end end })
    while true do end
  end)
  print(pcall(wrapped))
  local co = coroutine.create(function()
    local guard <close> = setmetatable({}, { __close = function() while true do end end })
    while true do end
  end)
  print(coroutine.resume(co))
  print(coroutine.close(co))
]])
if not f then while true do end end -- no to-be-closed variables before 5.4
f()
