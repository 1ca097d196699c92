-- The contract of the spec: eleven functions, each returning exactly `value, nil`.
local T = require("testing")
local system = require("system")

local FUNCTIONS = {
  "mem_stats", "allocated", "heap_objects", "gc", "set_gc_percent", "get_gc_percent",
  "num_goroutines", "go_max_procs", "num_cpu", "hostname", "pid",
}

T.test("require returns the same table twice", function()
  T.eq(require("system"), system, "second require")
end)

T.test("every function of the spec is present", function()
  for _, name in ipairs(FUNCTIONS) do
    T.eq(type(system[name]), "function", name)
  end
end)

T.test("each call returns exactly a value and nil", function()
  T.eq(type(T.ok("mem_stats", system.mem_stats)), "table")
  T.eq(math.type(T.ok("allocated", system.allocated)), "integer")
  T.eq(math.type(T.ok("heap_objects", system.heap_objects)), "integer")
  T.eq(T.ok("gc", system.gc), true)
  T.eq(math.type(T.ok("get_gc_percent", system.get_gc_percent)), "integer")
  local previous = T.ok("set_gc_percent", system.set_gc_percent, 100)
  T.eq(previous, 100, "previous percent of a fresh state")
  T.eq(math.type(T.ok("num_goroutines", system.num_goroutines)), "integer")
  T.eq(math.type(T.ok("go_max_procs", system.go_max_procs)), "integer")
  T.eq(math.type(T.ok("num_cpu", system.num_cpu)), "integer")
  T.eq(type(T.ok("hostname", system.hostname)), "string")
  T.eq(math.type(T.ok("pid", system.pid)), "integer")
end)

T.test("the spec's error-handling example runs", function()
  local stats, err = system.mem_stats()
  if err then error(err) end
  T.check(stats.alloc > 0)
end)

T.test("require works again after package.loaded.system = nil", function()
  package.loaded.system = nil
  local again = require("system")
  T.check(again ~= system, "a fresh table")
  T.eq(T.ok("allocated", again.allocated) > 0, true)
  -- Both tables report the same state: cycles are not counted twice.
  local before = system.mem_stats().num_gc
  system.gc()
  T.eq(again.mem_stats().num_gc - before, system.mem_stats().num_gc - before, "one count per cycle")
end)

T.done()
