-- The `system` module as the LuaRocks rock installs it: this file, plus the native part
-- `lua_system` (system.so built by crates/lua-system-module, installed as lua_system.so).
--
-- LuaRocks' `luasystem` rock (which busted depends on) also provides a module named `system`, as
-- system/init.lua over the native system/core. Lua's searchers try `system.lua` before
-- `system/init.lua`, so this file is the one `require("system")` finds; to keep busted and other
-- luasystem users working, luasystem's functions are added to the table when luasystem is
-- installed (ours win on a name clash; there is none today).
local system = require("lua_system")

local function search(name, path)
  if package.searchpath then return package.searchpath(name, path) end
  -- Lua 5.1 has no package.searchpath.
  local file_name = name:gsub("%.", "/")
  for template in path:gmatch("[^;]+") do
    local candidate = template:gsub("%?", file_name)
    local file = io.open(candidate)
    if file then file:close() return candidate end
  end
end

local function add(functions)
  if type(functions) ~= "table" then return end
  for name, value in pairs(functions) do
    if system[name] == nil then system[name] = value end
  end
end

-- luasystem's own module file, run as `require("system")` would run it.
local init = search("system.init", package.path)
if init then
  local chunk = loadfile(init)
  local ok, luasystem = pcall(chunk, "system")
  if ok then add(luasystem) end
else
  local ok, core = pcall(require, "system.core")
  if ok then add(core) end
end

return system
