-- expect: memory
local parts = {} for i = 1, 1e6 do parts[i] = "local x" .. i .. " = " .. i .. " " end
local f = assert(load(table.concat(parts)))
