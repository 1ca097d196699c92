-- expect: memory
local e = ("x"):rep(6 * 2 ^ 20) error(e .. e .. e)
