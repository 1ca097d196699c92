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

T.test("the extras beyond the spec are present: the memory limit, metrics", function()
  T.eq(type(system.set_memory_limit), "function")
  T.eq(type(system.get_memory_limit), "function")
  T.eq(type(system.metrics), "function")
end)

T.test("each call returns exactly a value and nil", function()
  T.eq(type(T.ok("mem_stats", system.mem_stats)), "table")
  T.check(T.is_integer(T.ok("allocated", system.allocated)), "allocated")
  T.check(T.is_integer(T.ok("heap_objects", system.heap_objects)), "heap_objects")
  T.eq(T.ok("gc", system.gc), true)
  T.check(T.is_integer(T.ok("get_gc_percent", system.get_gc_percent)), "get_gc_percent")
  local previous = T.ok("set_gc_percent", system.set_gc_percent, T.default_percent)
  T.eq(previous, T.default_percent, "previous percent of a fresh state")
  T.check(T.is_integer(T.ok("num_goroutines", system.num_goroutines)), "num_goroutines")
  T.check(T.is_integer(T.ok("go_max_procs", system.go_max_procs)), "go_max_procs")
  T.check(T.is_integer(T.ok("num_cpu", system.num_cpu)), "num_cpu")
  T.eq(type(T.ok("hostname", system.hostname)), "string")
  T.check(T.is_integer(T.ok("pid", system.pid)), "pid")
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
