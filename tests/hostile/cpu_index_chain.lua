-- expect: cpu
-- 50 levels: Lua 5.1 to 5.3 refuse chains of 100 ("loop in gettable").
local t = {} for _ = 1, 50 do t = setmetatable({}, { __index = t }) end
while true do local _ = t.missing end
