-- The cost of allocation accounting: allocation-heavy workloads in the runner's accounted state
-- against a plain mlua state (`--state plain`: mlua's own allocator, the module observing),
-- each run in a fresh runner process, the two kinds alternated, medians of 5 runs.
--
--   lua-system bench/workloads.lua            (about a minute)
--   lua-system bench/workloads.lua profile    the cost of --mem-profile instead: the accounted
--                                             state without, then with a sampler every 10 ms and 1 ms
--   lua-system bench/workloads.lua heap       the cost of --heap-profile: without, and at Go's
--                                             default rate (512 KiB)
--   lua-system bench/workloads.lua listen     the cost of --listen: without a server; scraped every
--                                             second with the heap profiler off (rate 0); scraped
--                                             every second and every 10 ms with it at its default
--                                             512 KiB (bench/scraped scrapes /metrics)
--   lua-system [--state plain] bench/workloads.lua run NAME [small]   (one run, prints seconds)
--
-- `small` sizes are for bench/accounting-instructions, which counts instructions with callgrind.
-- Loaded without `arg` (the criterion bench `accounting`), this file returns the workloads:
-- { { name, function(small) ... end }, ... }.
local WORKLOADS = {
  { "binary_trees_16", function(SMALL)
    local function bottom_up(depth)
      if depth == 0 then return {} end
      depth = depth - 1
      return { bottom_up(depth), bottom_up(depth) }
    end
    local function check(tree)
      if tree[1] then return 1 + check(tree[1]) + check(tree[2]) end
      return 1
    end
    local max_depth = SMALL and 12 or 16
    local stretch = check(bottom_up(max_depth + 1))
    local long_lived = bottom_up(max_depth)
    local sum = stretch
    for depth = 4, max_depth, 2 do
      for _ = 1, 2 ^ (max_depth - depth + 4) do sum = sum + check(bottom_up(depth)) end
    end
    return sum + check(long_lived)
  end },
  { "string_building", function(SMALL)
    local total = 0
    for round = 1, SMALL and 2 or 20 do
      local parts = {}
      for i = 1, 50000 do parts[#parts + 1] = "item " .. i .. ";" .. round end
      total = total + #table.concat(parts)
    end
    return total
  end },
  { "table_churn", function(SMALL)
    local live = {}
    for i = 1, SMALL and 300000 or 3000000 do live[i % 1000 + 1] = { i, i * 2, name = "x" } end
    return #live
  end },
  { "closures", function(SMALL)
    -- Closures with upvalues made and dropped: a counter factory and a composed pipeline.
    local function counter(start)
      local n = start
      return function(step) n = n + step return n end
    end
    local function compose(f, g) return function(x) return g(f(x)) end end
    local total = 0
    for i = 1, SMALL and 100000 or 1000000 do
      local c = counter(i)
      local h = compose(c, function(x) return x * 2 end)
      total = total + h(1) % 7
    end
    return total
  end },
  { "coroutines", function(SMALL)
    -- Generators: a coroutine made per batch, resumed until dead.
    local function range(n)
      return coroutine.wrap(function() for i = 1, n do coroutine.yield(i) end end)
    end
    local total = 0
    for _ = 1, SMALL and 10000 or 100000 do
      for v in range(10) do total = total + v end
    end
    return total
  end },
}

if type(arg) ~= "table" then
  return WORKLOADS
end

if arg[1] == "run" then
  for _, workload in ipairs(WORKLOADS) do
    if workload[1] == arg[2] then
      local start = os.clock()
      workload[2](arg[3] == "small")
      print(string.format("%.6f", os.clock() - start))
      return
    end
  end
  error("no workload " .. tostring(arg[2]))
end

local runner = arg[-1]
local script = arg[0]
local function time(options, name, wrapper)
  local command = string.format("%s %q %s %q run %s", wrapper or "", runner, options, script, name)
  local pipe = assert(io.popen(command))
  local seconds = tonumber(pipe:read("*a"))
  pipe:close()
  return assert(seconds, "no timing from " .. command)
end

local function median(values)
  table.sort(values)
  return values[(#values + 1) // 2]
end

-- Each configuration: a label and the runner's options.
local CONFIGURATIONS = {
  { "plain (s)", "--state plain" },
  { "accounted (s)", "--state accounted" },
}
if arg[1] == "profile" then
  local csv = os.tmpname()
  CONFIGURATIONS = {
    { "no profile (s)", "" },
    { "10 ms (s)", "--mem-profile " .. csv .. ".csv" },
    { "1 ms (s)", "--mem-profile " .. csv .. ".csv --mem-profile-interval 1" },
  }
elseif arg[1] == "listen" then
  local scraped = script:gsub("workloads%.lua$", "scraped")
  CONFIGURATIONS = {
    { "no server (s)", "" },
    { "1 s, rate 0 (s)", "--listen 127.0.0.1:0 --heap-profile-rate 0", scraped },
    { "1 s (s)", "--listen 127.0.0.1:0", scraped },
    { "10 ms (s)", "--listen 127.0.0.1:0", "SCRAPE_INTERVAL=0.01 " .. scraped },
  }
elseif arg[1] == "heap" then
  local profile = os.tmpname()
  CONFIGURATIONS = {
    { "no profiler (s)", "" },
    { "512 KiB (s)", "--heap-profile " .. profile .. ".pb.gz" },
  }
end

local header = { string.format("%-18s", "workload") }
for i, configuration in ipairs(CONFIGURATIONS) do
  header[#header + 1] = string.format("%14s", configuration[1])
  if i > 1 then header[#header + 1] = string.format("%8s", "ratio") end
end
print(table.concat(header, " "))
for _, workload in ipairs(WORKLOADS) do
  local times = {}
  for i = 1, #CONFIGURATIONS do times[i] = {} end
  for run = 1, 5 do
    for i, configuration in ipairs(CONFIGURATIONS) do
      times[i][run] = time(configuration[2], workload[1], configuration[3])
    end
  end
  local row = { string.format("%-18s", workload[1]) }
  local base = median(times[1])
  for i = 1, #CONFIGURATIONS do
    local m = median(times[i])
    row[#row + 1] = string.format("%14.3f", m)
    if i > 1 then row[#row + 1] = string.format("%7.3fx", m / base) end
  end
  print(table.concat(row, " "))
end
