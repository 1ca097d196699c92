-- Per-call cost of every function, beside collectgarbage("count") measured in the same run.
--
--   lua-system bench/calls.lua [calls per batch]
--
-- Each call is timed inline in a numeric for loop (no wrapper closure), in batches; a figure is
-- the median over batches of CPU time (os.clock) per call, minus the median of the same loop
-- with an empty body. "x count" is the ratio to collectgarbage("count") from this same run.
local system = require("system")

local N = tonumber(arg and arg[1]) or 1000000
local BATCHES = 9

-- Compiles `for i = 1, n do <call> end` with `system` as an upvalue.
local function loop(call)
  local source = "local system, n = ...\nreturn function()\n for _ = 1, n do " .. call .. " end\nend"
  return source
end

local function batch_ns(call, n)
  local run = assert(load(loop(call), "=bench"))(system, n)
  local start = os.clock()
  run()
  return (os.clock() - start) * 1e9 / n
end

local function median_ns(call, n)
  local samples = {}
  for i = 1, BATCHES do samples[i] = batch_ns(call, n) end
  table.sort(samples)
  return samples[(BATCHES + 1) // 2]
end

local empty = median_ns("", N)
local function cost(call, n) return math.max(median_ns(call, n or N) - empty, 0.0) end

local baseline = cost('local a = collectgarbage("count")')

local cases = {
  { "allocated()", "local a, b = system.allocated()" },
  { "heap_objects()", "local a, b = system.heap_objects()" },
  { "get_gc_percent()", "local a, b = system.get_gc_percent()" },
  { "num_goroutines()", "local a, b = system.num_goroutines()" },
  { "num_cpu()", "local a, b = system.num_cpu()" },
  { "go_max_procs()", "local a, b = system.go_max_procs()" },
  { "pid()", "local a, b = system.pid()" },
  { "hostname()", "local a, b = system.hostname()" },
  { "set_gc_percent(100)", "local a, b = system.set_gc_percent(100)" },
  { "mem_stats()", "local a, b = system.mem_stats()", N // 1000 },
  { "gc() (small heap)", "local a, b = system.gc()", N // 500 },
  { "collectgarbage('collect')", 'local a = collectgarbage("collect")', N // 500 },
}

print(string.format("%-26s %12s %10s", "call", "ns/call", "x count"))
print(string.format("%-26s %12.1f %10.2f", 'collectgarbage("count")', baseline, 1.0))
for _, case in ipairs(cases) do
  local ns = cost(case[2], case[3])
  print(string.format("%-26s %12.1f %10.2f", case[1], ns, ns / baseline))
end
print(string.format("(empty loop %.2f ns/iteration subtracted; median of %d batches of up to %d calls)", empty, BATCHES, N))
