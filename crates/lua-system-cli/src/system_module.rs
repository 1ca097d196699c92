//! `require("system")` under the runner: the built-in module, and luasystem's or a project's own
//! `system` beside it (`system_module.lua` says how; docs/runner.md says why).

use lua_system::mlua::{self, Lua};

/// Puts the built-in module under `lua_system` and makes `require("system")` add another
/// `system` module's functions to it. Not in the sandbox, whose `require` reaches no file.
pub fn share_the_name(lua: &Lua) -> mlua::Result<()> {
    lua.load(include_str!("system_module.lua")).set_name("=lua-system").exec()
}
