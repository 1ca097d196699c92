-- expect: survives
-- The functions the runner and the library put in front of Lua's own, through debug: every
-- upvalue, down through the functions they hold, replaced with junk and restored, the call made
-- meanwhile; a userdata upvalue's __gc called by hand. collectgarbage is the library's stand-in
-- under observe, sandbox and --gctrace/--mem-profile; os.exit the runner's (its last words at
-- the memory limit), in front of the library's under --stats, --mem-profile, --heap-profile and
-- --listen; coroutine.resume and coroutine.wrap the heap profiler's (--heap-profile, --listen)
-- or the module's (Lua 5.1 to 5.3); package.preload.system the runner's. Lua's own functions
-- they hold, when these have upvalues, are left alone: Lua trusts its C functions' upvalues (a
-- stock lua5.4 crashes on debug.setupvalue(coroutine.wrap(f), 1, 42)).
if not debug then
  print("survived")
  return
end
local junk = { 42, -1, 2 ^ 53, 1.5, "x", {}, true, print, coroutine.create(function() end) }
-- Attacked inside the functions above too: any function they hold but Lua's own function made
-- by coroutine.wrap (one upvalue, its coroutine).
local function ours(f)
  if type(f) ~= "function" then return false end
  local _, first = debug.getupvalue(f, 1)
  return not (type(first) == "thread" and debug.getupvalue(f, 2) == nil)
end
local function attack(f, call, extra, seen)
  seen = seen or {}
  if type(f) ~= "function" or seen[f] then return end
  seen[f] = true
  for i = 1, 8 do
    local name, value = debug.getupvalue(f, i)
    if name == nil then break end
    if ours(value) then attack(value, call, extra, seen) end
    if type(value) == "userdata" then
      local mt = debug.getmetatable(value)
      local gc = type(mt) == "table" and rawget(mt, "__gc")
      if type(gc) == "function" then
        pcall(gc, value)
        pcall(call)
        pcall(gc, value)
        pcall(call)
      end
    end
    for _, replacement in ipairs(junk) do
      debug.setupvalue(f, i, replacement)
      pcall(call)
    end
    for _, replacement in ipairs(extra or {}) do
      debug.setupvalue(f, i, replacement)
      pcall(call)
    end
    debug.setupvalue(f, i, value)
  end
  pcall(call)
end

-- collectgarbage: also the other stand-in's number (0 and 1: os.exit's hooks run, harmlessly).
attack(collectgarbage, function()
  collectgarbage("count")
  collectgarbage("step")
  collectgarbage()
  collectgarbage("bogus")
end, { 0, 1 })
-- os.exit, never whole: every call here meets a replaced upvalue (an exit would be status 3).
if os.exit then
  local exit = os.exit
  local seen = {}
  local function each(f)
    if type(f) ~= "function" or seen[f] then return end
    seen[f] = true
    for i = 1, 8 do
      local name, value = debug.getupvalue(f, i)
      if name == nil then break end
      if ours(value) then each(value) end
      for _, replacement in ipairs(junk) do
        debug.setupvalue(f, i, replacement)
        pcall(exit, 3)
      end
      debug.setupvalue(f, i, value)
    end
  end
  each(exit)
end
attack(error, function() error("x") end)
attack(coroutine.resume, function() coroutine.resume(coroutine.create(function() coroutine.yield(1) end)) end)
attack(coroutine.wrap, function() coroutine.wrap(function() return 1 end)() end)
attack(coroutine.create, function() coroutine.create(function() end) end)
-- The heap profiler's (two upvalues: Lua's function and the coroutine), not Lua's own.
local wrapped = coroutine.wrap(function() while true do coroutine.yield(1) end end)
if debug.getupvalue(wrapped, 2) then attack(wrapped, function() wrapped() end) end
local preload = package and package.preload
if preload and type(preload.system) == "function" then
  local loaded = package.loaded.system
  attack(preload.system, function()
    package.loaded.system = nil
    require("system")
  end)
  package.loaded.system = loaded
end
collectgarbage()
print("survived")
