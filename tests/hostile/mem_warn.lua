-- expect: survives
-- Warnings off: the runner must not copy what warn() is given (Lua 5.4 and later).
if warn then
  local big = ("x"):rep(4 * 2 ^ 20)
  local t = {} for i = 1, 200 do t[i] = big end
  local unpack = table.unpack or unpack
  for _ = 1, 50 do warn(unpack(t)) end
end
print("survived")
