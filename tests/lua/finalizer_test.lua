-- Calls from __gc finalizers, while Lua runs a collection: every function answers a value or
-- nil and a message; nothing crashes, nothing is left broken.
local T = require("testing")
local system = require("system")

local NAMES = { "mem_stats", "allocated", "heap_objects", "gc", "get_gc_percent", "num_goroutines",
                "go_max_procs", "num_cpu", "hostname", "pid", "get_memory_limit", "metrics" }
-- Lua 5.4.4 and later and 5.5 refuse collector requests while they run finalizers (where
-- `collectgarbage("count")` answers fail); earlier versions, 5.4.0 to 5.4.3 included, answer.
local MAY_REFUSE = (T.version == "5.4" or T.version == "5.5") and not T.luajit

T.test("every function called from a finalizer answers cleanly", function()
  local answers = {}
  local REFUSES
  T.with_finalizer(function()
    REFUSES = collectgarbage("count") == nil
    for _, name in ipairs(NAMES) do
      answers[name] = T.pack(pcall(system[name]))
    end
    answers.set_gc_percent = T.pack(pcall(system.set_gc_percent, 50))
  end)
  system.gc()
  T.check(answers.pid, "the finalizer ran")
  T.check(MAY_REFUSE or not REFUSES, "only Lua 5.4 and 5.5 refuse")
  for name, r in pairs(answers) do
    T.eq(r[1], true, name .. " did not raise")
    T.eq(r.n, 3, name .. " returned two values")
    T.check((r[2] ~= nil) ~= (r[3] ~= nil), name .. ": exactly one of value and message")
    if r[3] ~= nil then T.check(r[3]:find(name, 1, true), name .. ": message names the function: " .. r[3]) end
  end
  if REFUSES then
    -- These fail cleanly, and the refused call changed nothing.
    T.eq(answers.gc[2], nil, "gc refused")
    T.check(answers.gc[3]:find("finalizers", 1, true), answers.gc[3])
    T.eq(answers.set_gc_percent[2], nil, "set_gc_percent refused")
    T.eq(system.get_gc_percent(), T.default_percent, "unchanged")
    -- Every spec field is there, next_gc from the setting the module last saw.
    T.check(answers.mem_stats[2].next_gc, "next_gc answered there")
  else
    T.eq(answers.gc[2], true, "gc from a finalizer")
    -- Lua 5.2 to 5.4.3 and LuaJIT pause their collector while a finalizer runs, and say so:
    -- the previous setting reads -1 there. Lua restores the collector after the finalizer.
    local previous = answers.set_gc_percent[2]
    T.check(previous == -1 or previous == T.default_percent, "set_gc_percent from a finalizer: " .. tostring(previous))
    T.eq(system.set_gc_percent(T.default_percent), 50, "the setting made in the finalizer stands")
  end
  -- The rest answer.
  T.eq(answers.pid[2], system.pid())
  T.eq(type(answers.mem_stats[2]), "table")
  T.check(T.is_integer(answers.allocated[2]), "allocated")
end)

T.test("after finalizers, the module works as before", function()
  T.ok("gc", system.gc)
  T.eq(system.set_gc_percent(T.default_percent), T.default_percent)
  T.ok("mem_stats", system.mem_stats)
end)

T.test("finalizers that allocate and collect many times do not disturb the counts", function()
  local before = system.mem_stats().num_gc
  for i = 1, 200 do
    T.with_finalizer(function() local _ = { i, system.allocated() } end)
  end
  system.gc()
  system.gc()
  T.check(system.mem_stats().num_gc >= before + 2, "counted")
end)

T.done()
