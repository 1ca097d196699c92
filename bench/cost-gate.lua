-- The checks of bench/cost-gate, and the loop callgrind counts.
--
--   lua-system bench/cost-gate.lua list        one check a line: name, then its limits
--   lua-system bench/cost-gate.lua NAME N      runs the check's snippet N times
--
-- A limit is "<= ratio x base": base is a snippet measured in the same run (instructions per
-- call, the empty loop's iteration subtracted), and `floor+` limits the instructions above the
-- floor: a C function returning (42, nil) (bench/cost-gate builds it), the least any function of
-- the module can cost a script. Limits hold on a release build of the runner (thin LTO).
local checks = {
  -- Bases.
  { "empty", "" },
  { "floor", "local a, b = floor.f()" },
  { "count", 'local a = collectgarbage("count")' },
  { "constructor", "local t = { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9, j = 10, k = 11, "
    .. "l = 12, m = 13, n = 14, o = 15 }" },
  { "collect", 'collectgarbage("collect")', calls = 50 },
  -- The spec's functions. Cheap ones: at most collectgarbage("count"), and a fixed number of
  -- instructions above the floor (the trampoline, the registry, the permission check, the push).
  { "allocated", "local a, b = system.allocated()", count = 1.0, floor = 220 },
  { "heap_objects", "local a, b = system.heap_objects()", count = 1.0, floor = 220 },
  { "num_goroutines", "local a, b = system.num_goroutines()", count = 1.0, floor = 220 },
  { "num_cpu", "local a, b = system.num_cpu()", count = 1.0, floor = 220 },
  { "pid", "local a, b = system.pid()", count = 1.0, floor = 220 },
  { "go_max_procs", "local a, b = system.go_max_procs()", count = 1.0, floor = 320 },
  { "get_gc_percent", "local a, b = system.get_gc_percent()", count = 1.0, floor = 320 },
  { "set_gc_percent", "local a, b = system.set_gc_percent(100)", count = 1.5 },
  { "hostname", "local a, b = system.hostname()", count = 2.3 },
  { "mem_stats", "local a, b = system.mem_stats()", constructor = 5.0, calls = 2000 },
  { "mem_stats(t)", "local a, b = system.mem_stats(t)", constructor = 2.5, calls = 2000 },
  { "gc", "local a, b = system.gc()", collect = 1.05, calls = 50 },
}

if arg[1] == "list" then
  for _, check in ipairs(checks) do
    local limits = {}
    for _, base in ipairs({ "count", "floor", "constructor", "collect" }) do
      if check[base] then limits[#limits + 1] = base .. "=" .. check[base] end
    end
    print(check[1], check.calls or 0, table.concat(limits, " "))
  end
  return
end

local name, n = arg[1], assert(tonumber(arg[2]), "usage: cost-gate.lua list | NAME N")
for _, check in ipairs(checks) do
  if check[1] == name then
    local source = "local system, floor, n = ...\nlocal t = {}\nfor _ = 1, n do " .. check[2] .. " end"
    -- The floor sits in a table, as the module's functions do: the same lookup before the call.
    assert(load(source, "=" .. name))(require("lua_system"), { f = require("cost_floor") }, n)
    return
  end
end
error("no check " .. name)
