-- expect: memory
local t = {} for i = 1, 1e7 do t[i] = ("x"):rep(64) .. i end print(#table.concat(t))
