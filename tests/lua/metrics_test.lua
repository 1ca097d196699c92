-- system.metrics(): the module's figures in the Prometheus text exposition format, checked
-- line by line against the functions that report the same figures.
local T = require("testing")
local system = require("system")

-- Parses the exposition text: { name = { type =, help =, value = } }, checking its grammar.
local function parse(text)
  local families, order = {}, {}
  local help, kind
  for line in text:gmatch("([^\n]*)\n") do
    local name, rest = line:match("^# HELP ([%a_:][%w_:]*) (.+)$")
    if name then
      help = { name = name, text = rest }
    else
      name, rest = line:match("^# TYPE ([%a_:][%w_:]*) (%a+)$")
      if name then
        T.eq(help and help.name, name, "HELP comes before TYPE for " .. name)
        T.check(rest == "gauge" or rest == "counter", name .. ": type " .. rest)
        kind = { name = name, type = rest }
      else
        local value
        name, value = line:match("^([%a_:][%w_:]*) (%S+)$")
        T.check(name, "a sample line: " .. line)
        T.eq(kind and kind.name, name, "TYPE comes before the sample of " .. name)
        T.check(tonumber(value), name .. ": a number: " .. value)
        T.eq(families[name], nil, name .. " appears once")
        if kind.type == "counter" then T.check(name:match("_total$"), name .. ": a counter ends in _total") end
        families[name] = { type = kind.type, help = help.text, value = tonumber(value) }
        order[#order + 1] = name
        help, kind = nil, nil
      end
    end
  end
  T.check(text:sub(-1) == "\n", "the text ends with a newline")
  return families, order
end

T.test("metrics() answers text and nil, in the exposition format", function()
  local text = T.ok("metrics", system.metrics)
  T.eq(type(text), "string")
  local families, order = parse(text)
  T.check(#order >= 8, "at least eight families, got " .. #order)
  for _, name in ipairs({ "lua_heap_alloc_bytes", "lua_gc_cycles_total", "lua_gc_percent", "lua_max_procs",
                          "lua_process_cpus" }) do
    T.check(families[name], name .. " is present")
  end
  T.eq(families.lua_heap_alloc_bytes.type, "gauge")
  T.eq(families.lua_gc_cycles_total.type, "counter")
end)

T.test("metrics() reports what the functions report", function()
  -- The collector stopped, no cycle runs between metrics() and the reference figures.
  T.without_collector(function()
    local allocated = system.allocated()
    local stats = system.mem_stats()
    local families = parse(system.metrics())
    T.eq(families.lua_gc_cycles_total.value, stats.num_gc, "cycles")
    T.eq(families.lua_gc_percent.value, -1, "the collector is stopped")
    T.eq(families.lua_gc_next_bytes, nil, "no next target while stopped")
    local heap = families.lua_heap_alloc_bytes.value
    T.check(heap >= allocated and heap - allocated < 64 * 1024,
      "heap " .. heap .. " is what allocated() said, " .. allocated .. ", plus the stats table")
    T.eq(families.lua_max_procs.value, system.go_max_procs())
    T.eq(families.lua_process_cpus.value, system.num_cpu())
    T.eq(families.lua_heap_objects ~= nil, stats.heap_objects ~= nil, "objects where the module counts them")
    T.eq(families.lua_heap_allocated_bytes_total ~= nil, stats.total_alloc ~= nil, "total where counted")
    if stats.total_alloc then T.check(families.lua_heap_allocated_bytes_total.value >= heap, "total >= live") end
  end)
  local families = parse(system.metrics())
  T.eq(families.lua_gc_percent.value, system.get_gc_percent(), "percent once restarted")
  T.check(families.lua_gc_next_bytes.value > 0, "next target once restarted")
end)

T.test("metrics() counts cycles as they happen", function()
  local before = parse(system.metrics()).lua_gc_cycles_total.value
  system.gc()
  system.gc()
  local after = parse(system.metrics()).lua_gc_cycles_total.value
  T.check(after >= before + 2, "two forced cycles counted: " .. before .. " -> " .. after)
end)

T.test("process figures are in bytes and plausible", function()
  local families = parse(system.metrics())
  local resident = families.lua_process_resident_memory_bytes
  T.check(resident, "resident memory is read from /proc on Linux")
  T.check(resident.value > 1024 * 1024 and resident.value < 2 ^ 40, "resident: " .. resident.value)
  T.check(resident.value % 1024 == 0, "resident memory is whole pages")
end)

T.test("metrics() ignores extra arguments and works in a coroutine", function()
  T.ok("metrics", system.metrics, "x", 1.5, 0 / 0)
  local co = coroutine.create(function() return system.metrics() end)
  local ok, text, err = coroutine.resume(co)
  T.check(ok and type(text) == "string" and err == nil, "from a coroutine")
end)

T.done()
