-- A small test harness for the Lua test scripts: each script calls `test(name, fn)` for its
-- cases and `done()` at the end, which exits non-zero if any case failed.

local T = {}
local passed, failed = 0, 0

function T.test(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    passed = passed + 1
    print("ok - " .. name)
  else
    failed = failed + 1
    print("not ok - " .. name .. "\n" .. tostring(err))
  end
end

function T.done()
  print(string.format("%d passed, %d failed", passed, failed))
  if failed > 0 then os.exit(1) end
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function T.eq(actual, expected, what)
  if actual ~= expected then
    error(string.format("%s: expected %s, got %s", what or "value", show(expected), show(actual)), 2)
  end
end

function T.check(cond, what)
  if not cond then error(what or "check failed", 2) end
end

-- Calls f(...) and returns its results as a table with n = the number of results.
function T.results(f, ...)
  return table.pack(f(...))
end

-- The function succeeded: exactly two results, a value and nil. Returns the value.
function T.ok(name, f, ...)
  local r = table.pack(f(...))
  if r.n ~= 2 or r[1] == nil or r[2] ~= nil then
    error(string.format("%s: expected value, nil; got %d results: %s, %s", name, r.n, show(r[1]), show(r[2])), 2)
  end
  return r[1]
end

-- The function failed: exactly two results, nil and a message containing every pattern
-- (plain text). Returns the message.
function T.fails(name, f, args, ...)
  local r = table.pack(f(table.unpack(args, 1, args.n or #args)))
  if r.n ~= 2 or r[1] ~= nil or type(r[2]) ~= "string" then
    error(string.format("%s: expected nil, message; got %d results: %s, %s", name, r.n, show(r[1]), show(r[2])), 2)
  end
  for _, pattern in ipairs({ ... }) do
    if not r[2]:find(pattern, 1, true) then
      error(string.format("%s: message %s lacks %s", name, show(r[2]), show(pattern)), 2)
    end
  end
  return r[2]
end

return T
