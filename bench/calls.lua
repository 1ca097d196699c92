-- Per-call cost of every function of the module, beside Lua builtins measured in the same run.
--
--   lua-system bench/calls.lua [calls per batch]
--
-- Method: each call is inlined in a numeric for loop (no wrapper closure), compiled once; a
-- batch times the whole loop with os.clock (CPU time). A figure is the median over 9 batches,
-- minus the median of the same loop with an empty body. Ratios compare against builtins timed
-- in this same process, so the machine's speed and load cancel out as far as possible.
local system = require("system")

local N = tonumber(arg and arg[1]) or 1000000
local BATCHES = 9

local function loop(call, setup)
  return "local system, n = ...\n" .. (setup or "") .. "\nreturn function()\n for _ = 1, n do "
    .. call .. " end\nend"
end

local function median_ns(call, n, setup)
  local run = assert(load(loop(call, setup), "=bench"))(system, n)
  local samples = {}
  for i = 1, BATCHES do
    local start = os.clock()
    run()
    samples[i] = (os.clock() - start) * 1e9 / n
  end
  table.sort(samples)
  return samples[(BATCHES + 1) // 2]
end

local empty = median_ns("", N)
local function cost(call, n, setup)
  return math.max(median_ns(call, n or N, setup) - empty, 0.0)
end

local function row(name, ns, base, base_name)
  print(string.format("%-32s %12.1f %9.2fx %s", name, ns, ns / base, base_name))
end

print(string.format("%-32s %12s %10s %s", "call", "ns/call", "ratio", "against"))

-- 1. Functions answering one integer, against collectgarbage("count").
local count = cost('local a = collectgarbage("count")')
row('collectgarbage("count")', count, count, "itself")
for _, call in ipairs({ "allocated", "heap_objects", "get_gc_percent", "num_goroutines", "num_cpu",
                        "go_max_procs", "pid", "hostname" }) do
  row(call .. "()", cost("local a, b = system." .. call .. "()"), count, 'collectgarbage("count")')
end
row("set_gc_percent(100)", cost("local a, b = system.set_gc_percent(100)"), count, 'collectgarbage("count")')

-- 2. mem_stats against a fifteen-field table constructor.
local constructor = cost("local t = { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9, "
  .. "j = 10, k = 11, l = 12, m = 13, n = 14, o = 15 }", N // 10)
row("15-field table constructor", constructor, constructor, "itself")
row("mem_stats()", cost("local a, b = system.mem_stats()", N // 10), constructor, "15-field constructor")
row("mem_stats(t)", cost("local a, b = system.mem_stats(t)", N // 10, "local t = {}"), constructor,
  "15-field constructor")

-- metrics(): the same figures as text (about 1.5 KB built in a Lua buffer), beside mem_stats()
-- and a Lua string.format of twenty numbers, its closest builtin.
local format = cost('local s = string.format("%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d", '
  .. "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)", N // 10)
row("string.format, 20 numbers", format, format, "itself")
row("metrics()", cost("local a, b = system.metrics()", N // 100), format, "string.format, 20 numbers")

-- 3. gc() against collectgarbage("collect"), with 1 MB and 100 MB live.
for _, mb in ipairs({ 1, 100 }) do
  local live = {}
  for i = 1, mb * 1024 * 1024 // 64 do live[i] = "" .. i end -- strings of ~40 bytes + slots
  collectgarbage("collect")
  local calls = mb == 1 and 200 or 5
  local builtin = cost('collectgarbage("collect")', calls)
  row(string.format('collectgarbage("collect") %dMB', mb), builtin, builtin, "itself")
  row(string.format("gc() %dMB", mb), cost("system.gc()", calls), builtin, 'collectgarbage("collect")')
  row(string.format("mem_stats() %dMB", mb), cost("local a = system.mem_stats()", N // 100), constructor,
    "15-field constructor")
  live = nil
  collectgarbage("collect")
end

-- 4. go_max_procs(n) changing the value (a lock and an atomic store), against a query.
local cpus = system.num_cpu()
if cpus > 1 then
  local original = system.go_max_procs()
  local change = cost("system.go_max_procs(1) system.go_max_procs(" .. cpus .. ")", 200) / 2
  row("go_max_procs(n) (a change)", change, count, 'collectgarbage("count")')
  system.go_max_procs(original)
end

print(string.format("(empty loop %.2f ns/iteration subtracted; medians of %d batches; %d calls per batch"
  .. " for the cheap calls)", empty, BATCHES, N))
