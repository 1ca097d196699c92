-- Run by busted (which requires luasystem's `system`) while lua-system's `system` is the one
-- `require` finds: both must work (scripts/test-luasystem).
describe("lua-system next to luasystem", function()
  local system = require("system")

  it("is lua-system's module", function()
    assert.is_function(system.mem_stats)
    assert.is_true(system.allocated() > 0)
    assert.are.equal("interposed", system.mem_stats().accounting)
  end)

  it("carries luasystem's functions, which busted itself uses", function()
    assert.is_function(system.gettime)
    assert.is_function(system.monotime)
    assert.is_true(system.gettime() > 0)
  end)
end)
