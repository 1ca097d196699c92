-- mem_stats, allocated, heap_objects: fields, exactness, Go's invariants.
local T = require("testing")
local system = require("system")

local SPEC_FIELDS = {
  "alloc", "total_alloc", "sys", "heap_alloc", "heap_sys", "heap_idle", "heap_in_use",
  "heap_released", "heap_objects", "stack_in_use", "stack_sys", "mspan_in_use", "mspan_sys",
  "num_gc", "next_gc",
}
local EXTRA_FIELDS = { "mallocs", "frees", "last_gc", "gc_percent", "gc_percent_effective", "rss", "process_age_ns" }
-- Every field is there in every accounting mode (docs/figures.md, "Accounting modes").
local ACCOUNTING = { exact = true, interposed = true }

-- The process heap figures come from the process allocator's statistics (in a LuaJIT
-- interpreter, with the state's bytes in LuaJIT's own arena added). They are declared
-- unavailable only when those statistics describe another allocator than the one serving the
-- process (LD_PRELOAD, valgrind): never in these tests.
local function heap_declared(s)
  T.check(s.heap_sys, "heap figures present: " .. tostring(s.unavailable and s.unavailable.heap_sys))
  return false
end

local function invariants(s, previous)
  T.eq(s.alloc, s.heap_alloc, "alloc == heap_alloc")
  T.check(s.total_alloc >= s.alloc, "total_alloc >= alloc")
  T.check(s.stack_in_use <= s.stack_sys, "stack_in_use <= stack_sys")
  if not heap_declared(s) then
    T.eq(s.heap_sys, s.heap_idle + s.heap_in_use, "heap_sys == heap_idle + heap_in_use")
    T.check(s.heap_released <= s.heap_idle, "heap_released <= heap_idle")
    T.check(s.heap_in_use >= s.heap_alloc, "heap_in_use >= heap_alloc")
    T.check(s.mspan_in_use <= s.mspan_sys, "mspan_in_use <= mspan_sys")
    T.check(s.sys >= s.heap_sys + s.stack_sys + s.mspan_sys, "sys >= heap_sys + stack_sys + mspan_sys")
  end
  if s.next_gc then T.check(s.next_gc > 0, "next_gc > 0") end
  T.eq(s.heap_objects, s.mallocs - s.frees, "heap_objects == mallocs - frees")
  if previous then
    T.check(s.num_gc >= previous.num_gc, "num_gc never decreases")
    T.check(s.total_alloc >= previous.total_alloc, "total_alloc never decreases")
  end
end

-- Exact deltas need the collector stopped (T.without_collector): otherwise a cycle may free
-- earlier garbage meanwhile.
local without_collector = T.without_collector

T.test("mem_stats has every spec field and the extras as integers, or declares why not", function()
  local s = system.mem_stats()
  T.check(ACCOUNTING[s.accounting], "known accounting mode: " .. tostring(s.accounting))
  local heap_missing = heap_declared(s)
  for _, list in ipairs({ SPEC_FIELDS, EXTRA_FIELDS }) do
    for _, name in ipairs(list) do
      if heap_missing and (name:find("^heap_") or name:find("^mspan_")) and s.unavailable[name] then
        -- checked by heap_declared
      else
        T.check(T.is_integer(s[name]), name .. " is an integer: " .. tostring(s[name]))
      end
    end
  end
  T.check(heap_missing or s.process_source:find("jemalloc") or s.process_source:find("glibc"), "process_source")
  if not heap_missing then T.eq(s.unavailable, nil, "nothing unavailable") end
end)

T.test("mem_stats(t) refills t: same figures, no garbage", function()
  local t = { stale = true, alloc = -1 }
  T.eq(system.mem_stats(t), t)
  T.check(t.alloc > 0 and t.num_gc >= 0, "filled")
  T.eq(t.stale, true, "other fields are left alone")
  local fresh = system.mem_stats()
  for name, value in pairs(fresh) do
    if type(value) ~= "table" then T.eq(type(t[name]), type(value), name) end
  end
  if T.exact then
    T.without_jit(function() without_collector(function()
      system.mem_stats(t) -- first refill of every key done; now measure
      local before = system.allocated()
      for _ = 1, 100 do system.mem_stats(t) end
      T.eq(system.allocated(), before, "100 refills allocate nothing")
    end) end)
  end
end)

T.test("the process figures are at most 10 ms old, with their age", function()
  local s = system.mem_stats()
  T.check(T.is_integer(s.process_age_ns), "process_age_ns")
  T.check(s.process_age_ns >= 0 and s.process_age_ns <= 10 * 1000 * 1000, "age " .. s.process_age_ns)
end)

T.test("Go's invariants hold on every call, through allocation and collection", function()
  local previous = system.mem_stats()
  invariants(previous)
  local keep = {}
  for round = 1, 60 do
    for i = 1, 500 do keep[#keep + 1] = { i, tostring(i) .. "x" } end
    if round % 10 == 0 then keep = {}; system.gc() end
    local s = system.mem_stats()
    invariants(s, previous)
    previous = s
  end
end)

T.test("allocated() equals mem_stats().alloc and allocates nothing", function()
  local s = system.mem_stats()
  T.check(system.allocated() > s.alloc, "the stats table itself is on the heap")
  local a1 = system.allocated()
  local a2 = system.allocated()
  T.eq(a2, a1, "allocated() allocates nothing")
  local o1 = system.heap_objects()
  local o2 = system.heap_objects()
  T.eq(o2, o1, "heap_objects() allocates nothing")
end)

T.test("1000 new tables are exactly 1000 more objects, all of one size", function()
  T.without_jit(function() without_collector(function()
    local keep = {}
    for i = 1, 1000 do keep[i] = false end -- size the array part first
    local objects, bytes = system.heap_objects(), system.allocated()
    for i = 1, 1000 do keep[i] = {} end
    T.eq(system.heap_objects() - objects, 1000, "heap_objects delta")
    local per_table = (system.allocated() - bytes) / 1000
    T.check(per_table == math.floor(per_table), "every table the same size: " .. per_table)
  end) end)
  local bytes_before = system.allocated()
  system.gc()
  T.check(system.allocated() < bytes_before, "freed after collection")
end)

T.test("freeing objects lowers the count by exactly as many", function()
  T.without_jit(function()
    local keep = {}
    for i = 1, 500 do keep[i] = false end -- size the array part first
    -- Two full collections leave a steady state (whatever was garbage is freed, in either
    -- collector mode; the cycle sentinel is replaced one for one).
    system.gc(); system.gc()
    local before = system.heap_objects()
    for i = 1, 500 do keep[i] = {} end
    system.gc(); system.gc()
    T.eq(system.heap_objects() - before, 500, "the live objects")
    for i = 1, 500 do keep[i] = false end
    system.gc(); system.gc()
    T.eq(system.heap_objects(), before, "every one freed")
  end)
end)

T.test("a 10 MB string is 10 MB of heap, counted in every total", function()
  local big, before, after
  -- Made by concatenation: Lua 5.5's string buffers run a collector step when they hand over
  -- a large result (luaL_pushresult), even with the collector stopped.
  local half = string.rep("x", 5 * 1024 * 1024)
  without_collector(function()
    before = system.mem_stats()
    big = half .. half
    after = system.mem_stats()
  end)
  T.check(after.alloc - before.alloc >= 10 * 1024 * 1024, string.format("alloc grew by the string: %d -> %d, %d cycles",
    before.alloc, after.alloc, after.num_gc - before.num_gc))
  T.check(after.total_alloc - before.total_alloc >= 10 * 1024 * 1024, "total_alloc grew")
  T.check(heap_declared(after) or after.heap_in_use >= after.alloc, "process heap holds it")
  T.check(after.sys >= after.alloc, "sys holds it")
  invariants(after, before)
  big = nil
  system.gc()
  T.check(system.allocated() < after.alloc - 9 * 1024 * 1024, "released by the collector")
end)

T.test("total_alloc never decreases while alloc goes up and down", function()
  local last = system.mem_stats().total_alloc
  for _ = 1, 20 do
    local t = {}
    for i = 1, 1000 do t[i] = i end
    t = nil
    system.gc()
    local s = system.mem_stats()
    T.check(s.total_alloc >= last, "monotonic")
    last = s.total_alloc
  end
end)

T.test("next_gc follows the live heap and the GC percent", function() T.incremental(function()
  system.gc()
  local s = system.mem_stats()
  -- Lua's rule: (live after the cycle / 100) * pause, pause = 100 + effective percent. Lua's
  -- own threshold (next_gc_source "threshold") uses Lua's estimate of the live heap, which in
  -- 5.2 and 5.5 counts only what the collector traversed: below the bytes in use. (Whether it
  -- is where cycles really start: pacing_test.lua.)
  local expected = T.idiv(s.alloc, 100) * (100 + s.gc_percent_effective)
  T.check(s.next_gc <= expected * 1.1, "next_gc at most pause * live")
  T.check(s.next_gc >= expected * (s.next_gc_source == "threshold" and 0.5 or 0.9), "next_gc near pause * live")
  system.set_gc_percent(300)
  system.gc()
  local wider = system.mem_stats()
  -- Relative to the live heap (which the collection may have shrunk): 400% against 200%.
  local ratio, wider_ratio = s.next_gc / s.alloc, wider.next_gc / wider.alloc
  T.check(wider_ratio > ratio * 1.5, string.format("a larger percent pushes the next cycle further: x%.2f -> x%.2f", ratio, wider_ratio))
  system.set_gc_percent(T.default_percent)
end) end)

T.done()
