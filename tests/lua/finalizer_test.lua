-- Calls from __gc finalizers, while Lua runs a collection: every function answers a value or
-- nil and a message; nothing crashes, nothing is left broken.
local T = require("testing")
local system = require("system")

local NAMES = { "mem_stats", "allocated", "heap_objects", "gc", "get_gc_percent", "num_goroutines",
                "go_max_procs", "num_cpu", "hostname", "pid" }

T.test("every function called from a finalizer answers cleanly", function()
  local answers = {}
  setmetatable({}, { __gc = function()
    for _, name in ipairs(NAMES) do
      answers[name] = table.pack(pcall(system[name]))
    end
    answers.set_gc_percent = table.pack(pcall(system.set_gc_percent, 50))
  end })
  system.gc()
  T.check(answers.pid, "the finalizer ran")
  for name, r in pairs(answers) do
    T.eq(r[1], true, name .. " did not raise")
    T.eq(r.n, 3, name .. " returned two values")
    T.check((r[2] ~= nil) ~= (r[3] ~= nil), name .. ": exactly one of value and message")
    if r[3] ~= nil then T.check(r[3]:find(name, 1, true), name .. ": message names the function: " .. r[3]) end
  end
  -- Lua refuses collector requests while it runs finalizers: these fail cleanly.
  T.eq(answers.gc[2], nil, "gc refused")
  T.check(answers.gc[3]:find("finalizers", 1, true), answers.gc[3])
  T.eq(answers.set_gc_percent[2], nil, "set_gc_percent refused")
  T.eq(system.get_gc_percent(), 100, "the refused call changed nothing")
  -- The rest answer.
  T.eq(answers.pid[2], system.pid())
  T.eq(type(answers.mem_stats[2]), "table")
  T.check(answers.mem_stats[2].unavailable.next_gc, "next_gc declared unavailable there")
  T.eq(math.type(answers.allocated[2]), "integer")
end)

T.test("after finalizers, the module works as before", function()
  T.ok("gc", system.gc)
  T.eq(system.set_gc_percent(100), 100)
  T.ok("mem_stats", system.mem_stats)
end)

T.test("finalizers that allocate and collect many times do not disturb the counts", function()
  local before = system.mem_stats().num_gc
  for i = 1, 200 do
    setmetatable({}, { __gc = function() local _ = { i, system.allocated() } end })
  end
  system.gc()
  system.gc()
  T.check(system.mem_stats().num_gc >= before + 2, "counted")
end)

T.done()
