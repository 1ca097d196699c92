-- expect: survives
-- In the sandbox every escape fails; elsewhere the script only reports what it found.
local escaped = {}
local function try(name, f)
  local ok, result = pcall(f)
  if ok and result then escaped[#escaped + 1] = name end
end
try("io.open", function() return io.open("/proc/self/stat") end)
try("io.popen", function() return io.popen("true") end)
try("os.execute", function() return os.execute("true") end)
try("os.getenv", function() return os.getenv("HOME") end)
try("os.exit", function() return os.exit ~= nil end)
try("package.loadlib", function() return package.loadlib("libc.so.6", "*") end)
try("require C", function() return require("cjson") end)
try("require file", function() package.path = "/etc/?;" .. package.path return require("passwd") end)
try("dofile", function() return dofile("/etc/passwd") end)
try("loadfile", function() return loadfile("/etc/passwd") end)
try("load binary", function() return load("\27Lua") end)
try("string.dump", function() return string.dump(print) end)
try("debug", function() return debug.getregistry() end)
try("ffi", function() return require("ffi") end)
try("collectgarbage stop", function() collectgarbage("stop") return require("system").get_gc_percent() == -1 end)
try("collectgarbage stop\0", function() collectgarbage("stop\0") return require("system").get_gc_percent() == -1 end)
try("gc metamethod", function() return setmetatable({}, { __gc = function() end }) end)
try("pid", function() return require("system").pid() end)
if arg and arg[1] == "sandbox" and #escaped > 0 then
  error("escaped: " .. table.concat(escaped, ", "))
end
print(arg and arg[1] == "sandbox" and "contained" or "survived")
