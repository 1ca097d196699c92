-- The sandbox's standard library (lua_system::sandbox): what untrusted code may use of the
-- libraries the host opened. Runs once, with the full globals, in every Lua version.
local cpu_spent = ... -- the CPU budget's error message once it is spent, else nil (Rust)
local G = _G
local ipairs, pairs, type, rawget, select = ipairs, pairs, type, rawget, select
local byte, concat = string.byte, table.concat

-- Libraries with no place in a sandbox: files, processes, the debug interface, LuaJIT's FFI
-- and compiler controls.
for _, name in ipairs({ "io", "debug", "ffi", "jit" }) do
  G[name] = nil
end

-- Functions that reach the file system or bytecode.
G.dofile, G.loadfile = nil, nil
if type(G.string) == "table" then G.string.dump = nil end

-- os: the clock and dates only.
local os = rawget(G, "os")
if type(os) == "table" then
  local kept = { clock = os.clock, time = os.time, date = os.date, difftime = os.difftime }
  for name in pairs(os) do os[name] = nil end
  for name, f in pairs(kept) do os[name] = f end
end

-- load: text only. Lua 5.2 and later, and LuaJIT, take a mode; Lua 5.1 gets a check of the
-- first byte (binary chunks start with ESC), its readers' pieces joined first.
local load, loadstring = G.load, G.loadstring
local BINARY = "attempt to load a binary chunk (mode is 't')"
local function text_only(chunk)
  if type(chunk) == "function" then
    local parts = {}
    while true do
      local piece = chunk()
      if piece == nil or piece == "" then break end
      if type(piece) ~= "string" then return nil, "reader function must return a string" end
      parts[#parts + 1] = piece
    end
    chunk = concat(parts)
  end
  if type(chunk) == "string" and byte(chunk, 1) == 27 then return nil, BINARY end
  return chunk
end
if _VERSION == "Lua 5.1" and not rawget(G, "jit") then
  local function guarded(f)
    return function(chunk, name, ...)
      local text, err = text_only(chunk)
      if text == nil then return nil, err end
      return f(text, name, ...)
    end
  end
  if load then G.load = guarded(function(text, name) return loadstring(text, name) end) end
  if loadstring then G.loadstring = guarded(loadstring) end
else
  local function guarded(f)
    return function(chunk, name, mode, ...)
      if select("#", ...) > 0 then return f(chunk, name, "t", ...) end
      return f(chunk, name, "t")
    end
  end
  if load then G.load = guarded(load) end
  if loadstring then G.loadstring = guarded(loadstring) end
end

-- require: only modules the host preloaded or loaded. No Lua files from disk, no C modules.
local package = rawget(G, "package")
if type(package) == "table" then
  package.loadlib, package.searchpath = nil, nil
  package.path, package.cpath = "", ""
  local searchers = package.searchers or package.loaders
  if type(searchers) == "table" then
    for i = #searchers, 2, -1 do searchers[i] = nil end
  end
  local loaded, preload = package.loaded, package.preload
  for _, name in ipairs({ "io", "debug", "ffi", "jit", "jit.util", "jit.profile", "jit.opt" }) do
    if type(loaded) == "table" then loaded[name] = nil end
    if type(preload) == "table" then preload[name] = nil end
  end
  if type(loaded) == "table" and loaded.os ~= nil then loaded.os = os end
  if type(preload) == "table" then
    for name in pairs(preload) do
      if name ~= "system" then preload[name] = nil end
    end
  end
end

-- Code Lua runs with hooks off, where no CPU budget can stop it. Finalizers: a metatable with a
-- __gc field is refused (as Luau has none), and 5.1's newproxy, which makes userdata with one,
-- is gone. Message handlers: an error the budget raised is not passed to the script's handler
-- (Lua would run it with hooks off); other errors are.
local setmetatable, error, xpcall = setmetatable, error, xpcall
G.newproxy = nil
G.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in the sandbox", 2)
  end
  return setmetatable(t, mt)
end
G.xpcall = function(f, handler, ...)
  return xpcall(f, function(...)
    if cpu_spent() then return ... end
    return handler(...)
  end, ...)
end

-- Lua 5.4 and later: a coroutine that died of the budget's error keeps its hooks off, and closing
-- it (coroutine.close, or coroutine.wrap on an error) would run its pending __close handlers
-- beyond the budget. Once the budget is spent they are not run; coroutine.wrap is rebuilt on
-- create/resume/close for that.
local co = rawget(G, "coroutine")
if type(co) == "table" and co.close then
  local create, resume, close, status = co.create, co.resume, co.close, co.status
  local pack, unpack = table.pack, table.unpack
  co.close = function(thread)
    local spent = cpu_spent()
    if spent then error(spent, 0) end
    return close(thread)
  end
  co.wrap = function(f)
    local thread = create(f)
    return function(...)
      local r = pack(resume(thread, ...))
      if r[1] then return unpack(r, 2, r.n) end
      local err = r[2]
      local spent = cpu_spent()
      if spent then error(spent, 0) end
      if status(thread) == "dead" then
        local _, closing_err = close(thread)
        if closing_err ~= nil then err = closing_err end
      end
      if type(err) == "string" then error(err, 2) end -- with the caller's position, as Lua's wrap
      error(err, 0)
    end
  end
end
