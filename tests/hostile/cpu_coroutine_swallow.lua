-- expect: cpu
-- A coroutine dies of the budget's error; the main thread must not go on (and exit 0).
local co = coroutine.create(function() while true do end end)
print("resume:", coroutine.resume(co))
print("still running")
