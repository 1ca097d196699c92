-- num_goroutines, go_max_procs, num_cpu.
-- Saved before the module is loaded, as libraries save them: what they make counts too.
local saved_create, saved_wrap = coroutine.create, coroutine.wrap
local T = require("testing")
local system = require("system")

-- The CPUs a thread of this process may run on, from the kernel.
local PID = system.pid()

-- The CPUs thread `tid` of this process may run on (the whole process when tid is nil).
local function allowed_cpus(tid)
  local path = tid and ("/proc/" .. PID .. "/task/" .. tid .. "/status") or ("/proc/" .. PID .. "/status")
  local f = assert(io.open(path))
  local status = f:read("*a")
  f:close()
  local list = status:match("Cpus_allowed_list:%s*(%S+)")
  local count = 0
  for part in list:gmatch("[^,]+") do
    local a, b = part:match("(%d+)-(%d+)")
    if a then count = count + tonumber(b) - tonumber(a) + 1 else count = count + 1 end
  end
  return count
end

local function threads()
  local tids = {}
  -- /proc/self would be `ls` itself: name this process by its pid.
  for tid in io.popen("ls /proc/" .. PID .. "/task"):lines() do tids[#tids + 1] = tid end
  return tids
end

T.test("a fresh state has one goroutine: the main thread", function()
  T.eq(system.num_goroutines(), 1)
end)

T.test("1000 suspended coroutines add 1000; once collected they no longer count", function()
  system.gc()
  local base = system.num_goroutines()
  local cos = {}
  for i = 1, 1000 do
    cos[i] = coroutine.create(function() coroutine.yield() end)
    coroutine.resume(cos[i])
  end
  T.eq(system.num_goroutines(), base + 1000)
  cos = nil
  system.gc()
  T.eq(system.num_goroutines(), base)
end)

T.test("coroutines made by functions saved before the module was loaded count", function()
  system.gc()
  local base = system.num_goroutines()
  local cos, wrapped = {}, {}
  for i = 1, 8 do
    cos[i] = saved_create(function() coroutine.yield() end)
    coroutine.resume(cos[i])
    wrapped[i] = saved_wrap(function() coroutine.yield() end)
    wrapped[i]()
  end
  T.eq(system.num_goroutines(), base + 16)
  -- The saved functions are still Lua's: same errors, same results.
  local ok, err = pcall(saved_create, 42)
  T.eq(ok, false)
  T.check(tostring(err):find("bad argument #1", 1, true), tostring(err))
  T.eq(type(saved_wrap(function() return 7 end)), "function")
  T.eq(saved_wrap(function() return 7 end)(), 7)
  cos, wrapped = nil, nil
  system.gc()
  T.eq(system.num_goroutines(), base)
end)

T.test("coroutines are counted exactly through waves of births and deaths", function()
  -- The set of coroutine blocks grows, empties and grows again; every seventh coroutine stays.
  system.gc()
  local base = system.num_goroutines()
  local kept = {}
  for wave = 1, 3 do
    local cos = {}
    for i = 1, 5000 * wave do
      cos[i] = coroutine.create(function() coroutine.yield() end)
      coroutine.resume(cos[i])
    end
    T.eq(system.num_goroutines(), base + #kept + #cos, "wave " .. wave)
    for i = 7, #cos, 7 do kept[#kept + 1] = cos[i] end
    cos = nil
    system.gc()
    T.eq(system.num_goroutines(), base + #kept, "after wave " .. wave)
  end
  kept = nil
  system.gc()
  T.eq(system.num_goroutines(), base)
end)

T.test("a finished coroutine no longer counts, even while referenced; a suspended one does", function()
  system.gc()
  local base = system.num_goroutines()
  local finished = coroutine.create(function() end)
  local failed = coroutine.create(function() error("stop") end)
  local suspended = coroutine.create(function() coroutine.yield() end)
  local fresh = coroutine.create(function() end)
  T.eq(system.num_goroutines(), base + 4, "four coroutines that can run")
  coroutine.resume(finished)
  coroutine.resume(failed)
  coroutine.resume(suspended)
  T.eq(coroutine.status(finished), "dead")
  T.eq(coroutine.status(failed), "dead")
  T.eq(coroutine.status(suspended), "suspended")
  T.eq(system.num_goroutines(), base + 2, "the suspended and the fresh one")
  local results = { finished, failed } -- a results table keeping finished tasks: not leaks
  T.eq(system.num_goroutines(), base + 2)
  suspended, fresh, results = nil, nil, nil
  system.gc()
  T.eq(system.num_goroutines(), base)
end)

T.test("every function works from inside a coroutine", function()
  local co = coroutine.wrap(function()
    T.eq(system.num_goroutines() >= 2, true)
    T.ok("mem_stats", system.mem_stats)
    T.ok("gc", system.gc)
    T.ok("set_gc_percent", system.set_gc_percent, 100)
    T.ok("get_gc_percent", system.get_gc_percent)
    T.ok("allocated", system.allocated)
    T.ok("heap_objects", system.heap_objects)
    T.ok("go_max_procs", system.go_max_procs)
    T.ok("num_cpu", system.num_cpu)
    T.ok("hostname", system.hostname)
    T.ok("pid", system.pid)
    coroutine.yield()
    return "done"
  end)
  co()
  T.eq(co(), "done")
end)

T.test("num_cpu matches the CPUs the process may use", function()
  local cpus = system.num_cpu()
  T.check(cpus >= 1)
  T.eq(cpus, allowed_cpus(nil), "affinity at start")
end)

T.test("go_max_procs() without argument (or nil) changes nothing", function()
  local procs = system.go_max_procs()
  T.check(procs >= 1)
  T.eq(system.go_max_procs(nil), procs)
  T.eq(system.go_max_procs(), procs)
end)

T.test("go_max_procs(n) sets the process's limit and touches no thread's CPU affinity", function()
  -- Go's GOMAXPROCS limits Go's scheduler, not the OS: children and other threads keep every
  -- CPU (hosts apply the limit to the pools that run their Lua states).
  local cpus = system.num_cpu()
  local original = system.go_max_procs()
  local before = {}
  for _, tid in ipairs(threads()) do before[tid] = allowed_cpus(tid) end
  T.eq(system.go_max_procs(1), original, "returns the previous value")
  T.eq(system.go_max_procs(), 1)
  for _, tid in ipairs(threads()) do
    if before[tid] then T.eq(allowed_cpus(tid), before[tid], "thread " .. tid .. " keeps its CPUs") end
  end
  T.eq(system.go_max_procs(cpus), 1)
  system.go_max_procs(original)
end)

T.test("go_max_procs above the CPU count is kept, and capped at 1024 like Go", function()
  local original = system.go_max_procs()
  system.go_max_procs(system.num_cpu() + 3)
  T.eq(system.go_max_procs(), system.num_cpu() + 3)
  system.go_max_procs(1e300)
  T.eq(system.go_max_procs(), 1024)
  system.go_max_procs(original)
end)

T.test("the spec's resource check example runs", function()
  local cpus, err = system.num_cpu()
  if err then error(err) end
  local procs, err2 = system.go_max_procs()
  if err2 then error(err2) end
  if procs < cpus then system.go_max_procs(cpus) end
  T.check(system.go_max_procs() >= cpus)
end)

T.done()
