//! One run of one workload of `bench/workloads.lua` (its small size) in a plain mlua state or in
//! an accounted `SystemLua`, for counting instructions: `bench/accounting-instructions` runs it
//! under callgrind, the two kinds side by side (the criterion bench `accounting` times the same
//! workloads, but time on a shared machine varies by more than the difference measured).
//!
//!   accounting_once mlua|accounted WORKLOAD|startup
//!
//! `startup` makes the state and loads the workloads without running one: the part of every
//! count that is not the workload's. Both kinds use the same global allocator (this example
//! installs none: the system's), as the criterion bench does.

use lua_system::SystemLua;
use lua_system::mlua::{Lua, StdLib, Table, Value};

const WORKLOADS: &str = include_str!("../../../bench/workloads.lua");

fn run(lua: &Lua, name: &str) -> lua_system::mlua::Result<()> {
    let workloads: Table = lua.load(WORKLOADS).set_name("@bench/workloads.lua").eval()?;
    if name == "startup" {
        return Ok(());
    }
    for entry in workloads.sequence_values::<Table>() {
        let entry = entry?;
        if entry.get::<String>(1)? == name {
            entry.get::<lua_system::mlua::Function>(2)?.call::<Value>(true)?;
            return Ok(());
        }
    }
    Err(lua_system::mlua::Error::runtime(format!("no workload {name}")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, name] = args.as_slice() else {
        return Err("usage: accounting_once mlua|accounted WORKLOAD|startup".into());
    };
    match kind.as_str() {
        "mlua" => run(&Lua::new_with(StdLib::ALL_SAFE, Default::default())?, name)?,
        "accounted" => {
            // SAFETY: the `Lua` is not cloned, and is dropped with the `SystemLua`.
            let lua = unsafe { SystemLua::unsafe_new_with(StdLib::ALL_SAFE)? };
            run(&lua, name)?
        }
        _ => return Err(format!("unknown state kind {kind}: mlua or accounted").into()),
    }
    Ok(())
}
