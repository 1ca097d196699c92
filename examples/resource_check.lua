-- Resource check (the spec's best practice 4), run for real, plus the host identity used in
-- logs (best practice: system information).
--
--   lua-system examples/resource_check.lua
local system = require("system")

local cpus, err = system.num_cpu()
if err then error(err) end

local procs, err2 = system.go_max_procs()
if err2 then error(err2) end

print(string.format("host %s, pid %d", system.hostname(), system.pid()))
print(string.format("CPUs usable: %d, max procs: %d, coroutines: %d", cpus, procs, system.num_goroutines()))

if procs < cpus then
  -- Adjust the limit to use all available CPUs.
  system.go_max_procs(cpus)
  print("Adjusted max procs to use all " .. cpus .. " CPUs")
end

-- The limit is the process's, as Go's GOMAXPROCS: the Rust host applies it to the pools that
-- run its states (lua_system::on_max_procs_change). It changes no OS setting: a child process
-- still sees every CPU.
local previous = system.go_max_procs(1)
print("with go_max_procs(1): go_max_procs() = " .. system.go_max_procs())
system.go_max_procs(previous)

-- Errors come back as values, never as exceptions.
local result, message = system.set_gc_percent("fast")
print("set_gc_percent('fast') ->", result, message)
