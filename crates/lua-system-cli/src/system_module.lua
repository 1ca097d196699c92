-- `require("system")` under the runner (docs/runner.md, "The system module"): the built-in
-- module, with the functions of any other module named `system` on package.path or
-- package.cpath added where their names are free. That other module is luasystem (busted and
-- other tools use its clock), or a project's own system.lua; it runs as `require` would run it,
-- and its errors are raised as `require` would raise them. The built-in module alone is
-- `require("lua_system")`, as the LuaRocks rock names its native part.
local package = package
local preload, loaded = package.preload, package.loaded
local builtin = preload.system
preload.lua_system, loaded.lua_system = builtin, loaded.system
loaded.system = nil

preload.system = function(name)
  -- A table of its own each time, as the built-in loader gives (`package.loaded.system = nil`
  -- then `require("system")` makes a new one, reporting the same state).
  local system = builtin(name)
  local searchers = package.searchers or package.loaders
  -- The first searcher is preload's (this function); the others search the paths.
  for i = 2, #searchers do
    local loader, extra = searchers[i](name)
    if type(loader) == "function" then
      local other = loader(name, extra)
      if type(other) == "table" then
        for key, value in pairs(other) do
          if system[key] == nil then system[key] = value end
        end
      end
      break
    end
  end
  return system
end
