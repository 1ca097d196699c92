-- Runs one snippet N times: the unit of bench/instructions (callgrind counts the difference
-- between N and 0 repetitions).
--   lua-system bench/repeat.lua N 'snippet' ['setup']
local system = require("system")
local n, snippet, setup = tonumber(arg[1]), arg[2], arg[3] or ""
local source = "local system, n = ...\n" .. setup .. "\nfor _ = 1, n do " .. snippet .. " end"
assert(load(source, "=repeat"))(system, n)
