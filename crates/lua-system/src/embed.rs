//! Putting the module into a Lua state, from Rust.
//!
//! * [`SystemLua`]: a state the module creates, its allocator accounted from the first byte:
//!   every figure exact. This is what the `lua-system` runner uses.
//! * [`install`]: the module in a state created elsewhere (`mlua::Lua::new()`), where it reads
//!   what Lua reports and declares the rest unavailable (see [`Accounting::Observed`]).

use std::ops::Deref;
use std::ptr::NonNull;

use mlua::{Function, LightUserData, Lua, StdLib, Table};

use crate::ffi::state::{AccountedState, attach_to, make_loader, read_gc_percent, read_stats};
use crate::gc::CycleHook;
use crate::limit;
use crate::memory::MemStats;
use crate::metrics::Probe;
use crate::permissions::Permissions;
use crate::state::{Accounting, StateData};

/// The module's record of a state, kept in mlua's app data.
struct Installed {
    data: NonNull<StateData>,
    /// Set when the app data owns the record: for observed states, where mlua frees app data
    /// only after closing the state, so the record outlives every call and finalizer.
    _owner: Option<Box<StateData>>,
}

// SAFETY: `StateData` is `Sync` (atomics and a mutex); the pointer is only read through `&`.
unsafe impl Send for Installed {}

impl Installed {
    fn data(&self) -> &StateData {
        // SAFETY: the record lives until the state is closed, and so does this app data.
        unsafe { self.data.as_ref() }
    }
}

/// A Lua state created by the module: the standard libraries open, `require("system")`
/// available, and every allocation accounted from the first byte.
///
/// Dereferences to [`mlua::Lua`]; dropping it closes the state.
///
/// ```
/// # fn main() -> mlua::Result<()> {
/// // SAFETY: no clone of the `Lua` outlives `lua`.
/// let lua = unsafe { lua_system::SystemLua::new()? };
/// let objects: i64 = lua.load(r#"
///     local system = require("system")
///     collectgarbage("stop")              -- no cycle freeing other objects meanwhile
///     local n = system.heap_objects()
///     local t = {}
///     return system.heap_objects() - n
/// "#).eval()?;
/// assert_eq!(objects, 1); // the table
/// # Ok(())
/// # }
/// ```
pub struct SystemLua {
    lua: std::mem::ManuallyDrop<Lua>,
    /// Closes the state when dropped, after `lua`.
    _state: AccountedState,
}

impl SystemLua {
    /// A state with all standard libraries (`debug` and C modules included, as the `lua`
    /// interpreter has them).
    ///
    /// # Safety
    /// The module owns this state and closes it when the `SystemLua` is dropped. mlua cannot
    /// know that, so no clone of the `Lua` (from [`Clone`], or [`mlua::WeakLua::upgrade`]) may be
    /// used after that; handles such as `Table` or `Function` are safe (they report the state as
    /// destroyed).
    pub unsafe fn new() -> mlua::Result<SystemLua> {
        // SAFETY: the caller's contract is ours.
        unsafe { SystemLua::with_libs(StdLib::ALL) }
    }

    /// A state with the given standard libraries (the base library is always open).
    ///
    /// # Safety
    /// As for [`SystemLua::new`].
    pub unsafe fn with_libs(libs: StdLib) -> mlua::Result<SystemLua> {
        let state = AccountedState::new(Accounting::Exact)
            .ok_or_else(|| mlua::Error::MemoryError("lua-system: cannot create a Lua state".into()))?;
        // SAFETY: the handle lives in `SystemLua`, which drops it before closing the state; the
        // caller promises the same for clones.
        let lua = unsafe { state.lua() };
        let data = state.data();
        // mlua keeps one coroutine of its own (its reference stack); it is not the script's.
        // SAFETY: `data` lives as long as `state`.
        unsafe { data.as_ref() }.heap.hide_current_coroutines();
        let system = SystemLua { lua: std::mem::ManuallyDrop::new(lua), _state: state };
        system.lua.load_std_libs(libs)?;
        system.lua.set_app_data(Installed { data, _owner: None });
        register(&system.lua, data)?;
        Ok(system)
    }

    /// The module's figures for this state, as `system.mem_stats()` reads them.
    pub fn mem_stats(&self) -> mlua::Result<MemStats> {
        mem_stats(&self.lua)
    }

    /// Reads this state's figures from any thread, without entering Lua (see [`Probe`]): for a
    /// sampler running beside the script (`std::thread::scope` keeps it within the state's life).
    pub fn probe(&self) -> Probe<'_> {
        // SAFETY: `data` lives as long as `self._state`.
        Probe { data: unsafe { self._state.data().as_ref() } }
    }

    /// Calls `hook` for every completed collection cycle, from the finalizer that marks its end:
    /// the hook must not call into Lua. Replaces any previous hook; `None` removes it.
    ///
    /// While a hook is installed, the state also tracks its heap's peak between cycles (the
    /// cycle's `heap_before`); without one, its allocator does no such bookkeeping.
    pub fn on_gc_cycle(&self, hook: Option<CycleHook>) {
        self._state.watch_peaks(hook.is_some());
        self.probe().data.gc.set_hook(hook);
    }
}

impl Deref for SystemLua {
    type Target = Lua;

    fn deref(&self) -> &Lua {
        &self.lua
    }
}

impl Drop for SystemLua {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before `self._state` closes the state.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.lua) };
    }
}

/// Makes `require("system")` work in `lua`, a state created elsewhere, and returns the module
/// table. Installing twice is harmless: the same records are reused.
///
/// The module cannot account the allocations of a state it did not create. In a state mlua
/// created, it reads what Lua reports (bytes in use, cycles, collector settings) and declares the
/// rest unavailable, with the reason: see [`Accounting::Observed`]. In a state created in C and
/// taken over by mlua, it puts its allocator in front of the state's: [`Accounting::Interposed`].
/// Create the state with [`SystemLua`] for every figure exact.
pub fn install(lua: &Lua) -> mlua::Result<Table> {
    let existing = lua.app_data_ref::<Installed>().map(|installed| installed.data);
    let data = match existing {
        Some(data) => data,
        None if has_mlua_allocator(lua) => {
            let owner = Box::new(StateData { mlua_limit: true, ..StateData::new(Accounting::Observed) });
            let data = NonNull::from(&*owner);
            lua.set_app_data(Installed { data, _owner: Some(owner) });
            data
        }
        None => {
            // A state mlua took over from C (`Lua::get_or_init_from_ptr`): the module's allocator
            // goes in front of the state's own, as when `system.so` is loaded by an interpreter.
            let data = attach_to(lua)?;
            lua.set_app_data(Installed { data, _owner: None });
            data
        }
    };
    register(lua, data)
}

/// Whether mlua's allocator serves the state (mlua can then set a memory limit on it).
fn has_mlua_allocator(lua: &Lua) -> bool {
    match lua.set_memory_limit(0) {
        Ok(limit) => lua.set_memory_limit(limit).is_ok(),
        Err(_) => false,
    }
}

/// Puts the loader in `package.preload` (so `require` works again after
/// `package.loaded.system = nil`) and the table in `package.loaded`.
fn register(lua: &Lua, data: NonNull<StateData>) -> mlua::Result<Table> {
    // SAFETY: `make_loader` is a well-behaved C function; `data` outlives the state.
    let make_loader = unsafe { lua.create_c_function(make_loader)? };
    let loader: Function = make_loader.call(LightUserData(data.as_ptr().cast()))?;
    let module: Table = loader.call("system")?;
    // `package.preload` (not in the registry before Lua 5.2); absent without the package library.
    let package: Option<Table> = lua.globals().raw_get("package")?;
    if let Some(preload) = package.map(|p| p.get::<Option<Table>>("preload")).transpose()?.flatten() {
        preload.set("system", loader)?;
    }
    lua.register_module("system", &module)?;
    Ok(module)
}

fn installed(lua: &Lua) -> mlua::Result<mlua::AppDataRef<'_, Installed>> {
    lua.app_data_ref::<Installed>()
        .ok_or_else(|| mlua::Error::runtime("lua-system: the module is not installed in this state"))
}

/// The module's figures for `lua`, as `system.mem_stats()` reads them.
pub fn mem_stats(lua: &Lua) -> mlua::Result<MemStats> {
    let installed = installed(lua)?;
    read_stats(lua, installed.data())
}

/// The collector's percent, as `system.get_gc_percent()` answers (-1: stopped). A script may
/// change the collector without the module (`collectgarbage("stop")`); reading the percent
/// brings what [`SystemLua::probe`] samples up to date.
pub fn gc_percent(lua: &Lua) -> mlua::Result<i64> {
    let installed = installed(lua)?;
    read_gc_percent(lua, installed.data())
}

/// The state's memory limit in bytes (`None`: no limit). See `set_memory_limit`.
pub fn memory_limit(lua: &Lua) -> mlua::Result<Option<usize>> {
    let installed = installed(lua)?;
    limit::get(installed.data(), Some(lua)).map_err(|e| mlua::Error::runtime(e.as_str()))
}

/// Sets the state's memory limit in bytes (`None`: no limit) and returns the previous one.
/// Past the limit, an allocation fails and the script gets Lua's "not enough memory" error,
/// which `pcall` can catch; freeing memory makes room again. A limit below the bytes in use is
/// accepted and stops growth. States mlua created use mlua's own limit.
pub fn set_memory_limit(lua: &Lua, limit: Option<usize>) -> mlua::Result<Option<usize>> {
    let installed = installed(lua)?;
    limit::set(installed.data(), Some(lua), limit).map_err(|e| mlua::Error::runtime(e.as_str()))
}

/// Marks the start (`true`) and end of a full collection the host runs itself, so the cycle it
/// completes is reported as forced (see [`SystemLua::on_gc_cycle`]). `system.gc()` marks its own.
/// Marks nest (a finalizer may force a collection inside another): pair every `true` with a
/// `false`.
pub fn mark_forced_collection(lua: &Lua, forced: bool) -> mlua::Result<()> {
    installed(lua)?.data().gc.mark_forced(forced);
    Ok(())
}

/// What scripts of the state may do with the module (default: everything).
pub fn permissions(lua: &Lua) -> mlua::Result<Permissions> {
    Ok(installed(lua)?.data().permissions())
}

/// Sets what scripts of the state may do with the module. A denied call answers
/// `nil, "permission denied: system.<function>"` and changes nothing.
pub fn set_permissions(lua: &Lua, permissions: Permissions) -> mlua::Result<()> {
    installed(lua)?.data().set_permissions(permissions);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module's memory in one state: the Lua objects `register` creates (module table,
    /// eleven closures, loader, cycle sentinel) and the Rust-side record. Budget: 16 KiB.
    #[test]
    fn the_module_costs_under_16_kib_per_state() {
        let state = AccountedState::new(Accounting::Exact).unwrap();
        // SAFETY: the handle is dropped before the state.
        let lua = unsafe { state.lua() };
        lua.load_std_libs(StdLib::ALL_SAFE).unwrap();
        let data = state.data();
        // SAFETY: `data` lives as long as `state`.
        let heap = unsafe { &data.as_ref().heap };
        lua.gc_collect().unwrap();
        let before = heap.live_bytes();
        register(&lua, data).unwrap();
        lua.gc_collect().unwrap();
        let lua_bytes = heap.live_bytes() - before;
        let rust_bytes = (std::mem::size_of::<StateData>() + std::mem::size_of::<Installed>()) as u64;
        println!("module per state: {lua_bytes} bytes of Lua heap + {rust_bytes} bytes of Rust heap");
        assert!(lua_bytes + rust_bytes <= 16 * 1024, "{lua_bytes} + {rust_bytes}");
        drop(lua);
    }
}
