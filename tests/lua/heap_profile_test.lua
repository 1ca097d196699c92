-- set_heap_profile_rate and write_heap_profile, in every host these scripts run in: the runner
-- and system.so in Debian's lua5.1 ... lua5.4 and luajit (scripts/test-interpreters).
local T = require("testing")
local system = require("system")

T.test("allocations go to the function that made them, and to a coroutine's own stack", function()
  T.eq(system.set_heap_profile_rate(1), 0, "off before")
  local function made_by_alpha() local t = {} for i = 1, 500 do t[i] = { i } end return t end
  local function made_in_coroutine() local t = {} for i = 1, 500 do t[i] = { i } end return t end
  KEEP_ALPHA = made_by_alpha()
  local gen = coroutine.wrap(function() KEEP_CO = made_in_coroutine() end)
  gen()
  local path = os.tmpname()
  local ok, err = system.write_heap_profile(path .. ".folded")
  T.eq(system.set_heap_profile_rate(0), 1, "the previous rate")
  T.eq(ok, true, tostring(err))
  T.eq(err, nil)
  local file = assert(io.open(path .. ".folded"))
  local text = file:read("*a")
  file:close()
  os.remove(path .. ".folded")
  os.remove(path)
  local alpha, coroutine_stack = 0, 0
  for line in text:gmatch("[^\n]+") do
    local value = tonumber(line:match(" (%d+)$"))
    if line:find(";made_by_alpha (", 1, true) then alpha = alpha + value end
    if line:find(";made_in_coroutine (", 1, true) then
      T.check(line:find("^function <"), "a coroutine's own stack: " .. line)
      coroutine_stack = coroutine_stack + value
    end
  end
  -- 500 tables of one element, in use: at least 500 * 40 bytes each way.
  T.check(alpha >= 500 * 40, "made_by_alpha holds " .. alpha .. " bytes\n" .. text)
  T.check(coroutine_stack >= 500 * 40, "made_in_coroutine holds " .. coroutine_stack .. " bytes\n" .. text)
end)

T.test("bad input answers nil and a message", function()
  T.fails("set_heap_profile_rate", system.set_heap_profile_rate, { n = 1, -1 }, "bad argument #1 to 'set_heap_profile_rate'")
  T.fails("set_heap_profile_rate", system.set_heap_profile_rate, { n = 1, 0 / 0 }, "bad argument #1")
  T.fails("write_heap_profile", system.write_heap_profile, { n = 0 }, "bad argument #1 to 'write_heap_profile'")
  T.fails("write_heap_profile", system.write_heap_profile, { n = 1, "profile.txt" }, "cannot tell the heap profile format")
end)

T.done()
