-- Where does the memory go? A small program with the usual suspects: a cache that keeps what it
-- loads, a parser that makes short-lived garbage, and a worker coroutine. Run it with a heap
-- profile and read the profile with `go tool pprof` (README, "Where the memory goes"):
--
--   lua-system --heap-profile heap.pb.gz examples/where_memory_goes.lua
--   go tool pprof -top heap.pb.gz              (in use at the end; -sample_index=alloc_space: all allocations)
--   lua-system --heap-profile heap.svg examples/where_memory_goes.lua    (a flamegraph)
local system = require("system")

local cache = {}

-- Keeps every record it loads: this is what stays in use.
local function load_record(id)
  local record = { id = id, name = "record-" .. id, payload = string.rep("p", 2000) }
  cache[id] = record
  return record
end

-- Splits a line into fields: every call makes garbage, freed by the next cycle.
local function parse_line(line)
  local fields = {}
  for field in line:gmatch("[^,]+") do
    fields[#fields + 1] = field:upper()
  end
  return fields
end

-- A worker coroutine building reports: its allocations are its own stack's.
local worker = coroutine.wrap(function()
  while true do
    local report = {}
    for i = 1, 50 do report[i] = string.format("line %d of the report", i) end
    coroutine.yield(table.concat(report, "\n"))
  end
end)

local line = string.rep("alpha,beta,gamma,delta,", 20)
for id = 1, 20000 do
  load_record(id)
  parse_line(line)
  if id % 10 == 0 then worker() end
end

collectgarbage()
print(string.format("%d records cached; %.1f MB in use", #cache, system.allocated() / 1024 / 1024))
