//! For Rust hosts: the module in a state, from Rust.
//!
//! * `system_lua.rs`: [`SystemLua`](system_lua::SystemLua), a state whose every block is counted.
//! * `install.rs`: the module in a state made elsewhere, and what a host does with any state the
//!   module is installed in (figures, memory limit and reserve, permissions, heap profile).
//! * `sandbox.rs` (and `sandbox.lua`): containment for untrusted scripts, the CPU budget.
//! * `gc_gate.rs`: `collectgarbage` under the module's permissions, its collections marked.
//! * `stand_ins.rs`: the functions standing in for Lua's (`collectgarbage`, `os.exit` with
//!   [`on_exit`](stand_ins::on_exit)).
//! * `probe.rs`: sampling a running state from another thread.

pub(crate) mod gc_gate;
pub(crate) mod install;
pub(crate) mod probe;
pub(crate) mod sandbox;
pub(crate) mod stand_ins;
pub(crate) mod system_lua;
