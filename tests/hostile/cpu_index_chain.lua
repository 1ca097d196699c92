-- expect: cpu
local t = {} for _ = 1, 100 do t = setmetatable({}, { __index = t }) end
while true do local _ = t.missing end
