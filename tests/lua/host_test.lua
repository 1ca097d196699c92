-- hostname and pid, checked against the kernel.
local T = require("testing")
local system = require("system")

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  return s
end

T.test("hostname() is the kernel's host name", function()
  T.eq(system.hostname(), (read("/proc/sys/kernel/hostname"):gsub("\n$", "")))
end)

T.test("pid() is this process's id", function()
  -- /proc/self is the process reading it: this one.
  T.eq(system.pid(), tonumber(read("/proc/self/stat"):match("^(%d+)")))
end)

T.test("pid() in a child process is the child's id", function()
  -- A child runner reports its own pid, different from ours and matching its /proc/self.
  -- The interpreter is arg's lowest index (options such as --state come after it).
  local i = -1
  while arg[i - 1] do i = i - 1 end
  local cmd = string.format("%q -e %q", arg[i] or "lua-system",
    'local s = require("system"); local f = io.open("/proc/self/stat"); ' ..
    'print(s.pid() == tonumber(f:read("*a"):match("^(%d+)")) and s.pid())')
  local out = io.popen(cmd):read("*a")
  local child = tonumber(out:match("(%d+)"))
  T.check(child and child ~= system.pid(), "child pid " .. tostring(out))
end)

T.done()
