//! Putting the module into a Lua state, from Rust.
//!
//! * [`SystemLua`]: a state whose every block the module counts, with `require("system")`
//!   available. [`SystemLua::new`] is safe: mlua creates and owns the state, and the module's
//!   allocator counts in front of mlua's from the bare state on (its figures known exactly, see
//!   [`bare_state`]). [`SystemLua::unsafe_new`] lets the module create the state with its own
//!   allocator from the first byte (every standard library, C modules included): the fastest
//!   path, which the `lua-system` runner uses.
//! * [`install`]: the module in a state made elsewhere (`mlua::Lua::new()`, a C host), counting
//!   from the load ([`Accounting::Interposed`]).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use mlua::{Lua, LuaOptions, StdLib, Table};

use crate::cycles::CycleHook;
use crate::ffi::{foreign, loader, states};
use crate::module::Module;
use crate::permissions::Permissions;
use crate::probe::Probe;
use crate::state_data::{Accounting, StateData};
use crate::stats::MemStats;

/// A Lua state whose every heap block the module counts, with the standard libraries asked for
/// and `require("system")` available. Dereferences to [`mlua::Lua`].
///
/// ```
/// # fn main() -> mlua::Result<()> {
/// let lua = lua_system::SystemLua::new()?;
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
    owner: Owner,
}

/// Who made the state, and so how the module leaves it.
enum Owner {
    /// The module: it closes the state when the `SystemLua` is dropped.
    Module(states::AccountedState<StateData>),
    /// mlua, which closes the state when its last handle is dropped; the module gives mlua its
    /// allocator back when the `SystemLua` is dropped, then drops its record (`Drop`).
    Mlua(Arc<StateData>),
}

impl SystemLua {
    /// A state with mlua's safe standard libraries ([`StdLib::ALL_SAFE`]: no `debug`, no C
    /// modules), as [`mlua::Lua::new`] makes it.
    pub fn new() -> mlua::Result<SystemLua> {
        SystemLua::with_libs(StdLib::ALL_SAFE)
    }

    /// A state with the given standard libraries, under mlua's rules for safe states
    /// ([`mlua::Lua::new_with`]: `debug` refused, C modules disabled).
    pub fn with_libs(libs: StdLib) -> mlua::Result<SystemLua> {
        let bare = bare_state();
        let lua = Lua::new_with(StdLib::NONE, LuaOptions::new())?;
        // Only live blocks, as in the calibration: garbage depends on when collections ran.
        lua.gc_collect()?;
        lua.gc_collect()?;
        let record = foreign::take_over(&lua, |chain, bytes| match bare {
            // The bare state holds exactly what the calibration found: every block is counted.
            Some((bare_bytes, blocks)) if bare_bytes == bytes => StateData::chained(chain, bytes, blocks),
            _ => StateData::interposed(chain, bytes),
        })?;
        // mlua keeps one coroutine of its own (its reference thread); it is not the script's.
        // SAFETY: this thread made the state and runs it.
        unsafe { record.heap().coroutines().hide_current() };
        let system = SystemLua { lua: std::mem::ManuallyDrop::new(lua), owner: Owner::Mlua(record) };
        system.lua.load_std_libs(libs)?;
        loader::install::<Module>(&system.lua)?;
        Ok(system)
    }

    /// A state with every standard library (`debug` and C modules included, as the `lua`
    /// interpreter has them), whose allocator is the module's from its first byte.
    ///
    /// # Safety
    /// As [`mlua::Lua::unsafe_new`] (C modules and `debug` can break every guarantee), and: the
    /// module owns this state and closes it when the `SystemLua` is dropped, which mlua cannot
    /// know, so no clone of the `Lua` (from [`Clone`], or [`mlua::WeakLua::upgrade`]) may be used
    /// after that. Handles such as `Table` or `Function` are safe (they report the state as
    /// destroyed).
    pub unsafe fn unsafe_new() -> mlua::Result<SystemLua> {
        // SAFETY: the caller's contract is ours.
        unsafe { SystemLua::unsafe_new_with(StdLib::ALL) }
    }

    /// [`SystemLua::unsafe_new`] with the given standard libraries (the base library is always
    /// open).
    ///
    /// # Safety
    /// As for [`SystemLua::unsafe_new`].
    pub unsafe fn unsafe_new_with(libs: StdLib) -> mlua::Result<SystemLua> {
        let state = states::AccountedState::new(StateData::exact())
            .ok_or_else(|| mlua::Error::MemoryError("lua-system: cannot create a Lua state".into()))?;
        // SAFETY: the handle lives in `SystemLua`, which drops it before closing the state; the
        // caller promises the same for clones.
        let lua = unsafe { state.lua() };
        // SAFETY: as above (mlua's reference thread), on the thread that made the state.
        unsafe { state.record().heap().coroutines().hide_current() };
        states::publish(&lua, Arc::clone(state.record()));
        let system = SystemLua { lua: std::mem::ManuallyDrop::new(lua), owner: Owner::Module(state) };
        // Every library, C modules included: the caller accepted that.
        system.lua.load_std_libs(libs)?;
        loader::install::<Module>(&system.lua)?;
        Ok(system)
    }

    fn record(&self) -> &StateData {
        match &self.owner {
            Owner::Module(state) => state.record(),
            Owner::Mlua(record) => record,
        }
    }

    /// How the module counts this state's blocks: [`Accounting::Exact`], unless mlua's bare
    /// state did not match the module's calibration (then [`Accounting::Interposed`]).
    pub fn accounting(&self) -> Accounting {
        self.record().accounting()
    }

    /// The module's figures for this state, as `system.mem_stats()` reads them.
    pub fn mem_stats(&self) -> mlua::Result<MemStats> {
        mem_stats(&self.lua)
    }

    /// Reads this state's figures from any thread, without entering Lua (see [`Probe`]): for a
    /// sampler running beside the script (`std::thread::scope` keeps it within the state's life).
    pub fn probe(&self) -> Probe<'_> {
        Probe::new(self.record())
    }

    /// Calls `hook` for every completed collection cycle, from the finalizer that marks its end:
    /// the hook must not call into Lua. Replaces any previous hook; `None` removes it.
    ///
    /// While a hook is installed, the state also tracks its heap's peak between cycles (the
    /// cycle's `heap_before`); without one, its allocator does no such bookkeeping.
    pub fn on_gc_cycle(&self, hook: Option<CycleHook>) -> mlua::Result<()> {
        let watching = hook.is_some();
        self.record().cycles().set_hook(hook);
        match &self.owner {
            Owner::Module(state) => {
                state.watch_peaks(watching);
                Ok(())
            }
            Owner::Mlua(record) => foreign::watch_peaks(&self.lua, &**record, watching),
        }
    }

    /// The state's memory limit in bytes, as [`mlua::Lua::set_memory_limit`] takes it: 0 means
    /// no limit. Returns the previous one (0: none). The module's allocator enforces it: past
    /// it, an allocation fails and the script gets Lua's "not enough memory" error, which
    /// `pcall` can catch.
    pub fn set_memory_limit(&self, limit: usize) -> mlua::Result<usize> {
        let previous = self.record().heap().set_memory_limit((limit != 0).then_some(limit));
        Ok(previous.unwrap_or(0))
    }

    /// Bytes of the state's live heap blocks, as [`mlua::Lua::used_memory`] reports them.
    pub fn used_memory(&self) -> usize {
        self.record().heap().live_bytes() as usize
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
        // `lua_close` runs every finalizer, the cycle sentinel's too: that is no cycle to report.
        self.record().cycles().set_hook(None);
        match &self.owner {
            Owner::Mlua(record) => {
                // mlua closes the state when its last handle goes (maybe later, if the host kept
                // a clone): it gets its allocator back first. Should that fail, the record is
                // kept alive for good rather than dropped while the allocator may still use it.
                if foreign::give_back_to(&self.lua, &**record).is_err() {
                    std::mem::forget(Arc::clone(record));
                }
            }
            Owner::Module(_) => states::unpublish::<StateData>(&self.lua),
        }
        // SAFETY: dropped once, here; for `Owner::Module`, before `owner` closes the state.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.lua) };
    }
}

/// The figures of a bare state as mlua makes it (`Lua::new_with(StdLib::NONE)`, then two full
/// collections): bytes and live blocks, measured once per process in a state the module makes
/// the same way with its own allocator (mlua's setup code is the same for both). A
/// [`SystemLua::new`] state whose bytes match holds exactly these blocks, so the module's
/// counts start from them and cover every block. `None` if the calibration failed.
fn bare_state() -> Option<(u64, u64)> {
    static BARE: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *BARE.get_or_init(|| {
        let state = states::AccountedState::new(StateData::exact())?;
        // SAFETY: the handle is dropped before the state.
        let lua = unsafe { state.lua() };
        // What `Lua::new_with(StdLib::NONE)` runs after setting the state up.
        lua.load_std_libs(StdLib::NONE).ok()?;
        lua.gc_collect().ok()?;
        lua.gc_collect().ok()?;
        let heap = state.record().heap().figures();
        drop(lua);
        Some((heap.live_bytes, heap.objects()))
    })
}

/// Makes `require("system")` work in `lua`, a state created elsewhere, and returns the module
/// table. Installing twice is harmless: the same record is reused.
///
/// The module puts its allocator in front of the state's own and counts from then on: bytes in
/// use are exact, block counts cover the blocks allocated since ([`Accounting::Interposed`]).
/// Create the state with [`SystemLua`] for every block counted. After this, mlua's own memory
/// functions (`Lua::set_memory_limit`) answer that memory control is not available (its
/// allocator is no longer in front): use [`set_memory_limit`].
pub fn install(lua: &Lua) -> mlua::Result<Table> {
    foreign::attach_to(lua, StateData::interposed)?;
    loader::install::<Module>(lua)
}

/// The module's figures for `lua`, as `system.mem_stats()` reads them.
pub fn mem_stats(lua: &Lua) -> mlua::Result<MemStats> {
    states::with_record(lua, |data: &StateData, collector| MemStats::read(data, collector))
}

/// The collector's percent, as `system.get_gc_percent()` answers (-1: stopped). A script may
/// change the collector without the module (`collectgarbage("stop")`); reading the percent
/// brings what [`SystemLua::probe`] samples up to date.
pub fn gc_percent(lua: &Lua) -> mlua::Result<i64> {
    states::with_record(lua, |data: &StateData, collector| crate::gc::current_percent(data, collector))?
        .map_err(|_| mlua::Error::runtime(format!("lua-system: {}", crate::ffi::collector::Busy::REASON)))
}

/// The state's memory limit in bytes (`None`: no limit). See [`set_memory_limit`].
pub fn memory_limit(lua: &Lua) -> mlua::Result<Option<usize>> {
    states::with_record(lua, |data: &StateData, _| data.heap().memory_limit())
}

/// Sets the state's memory limit in bytes (`None`: no limit) and returns the previous one.
/// Past the limit, an allocation fails and the script gets Lua's "not enough memory" error,
/// which `pcall` can catch; freeing memory makes room again. A limit below the bytes in use is
/// accepted and stops growth.
pub fn set_memory_limit(lua: &Lua, limit: Option<usize>) -> mlua::Result<Option<usize>> {
    states::with_record(lua, |data: &StateData, _| data.heap().set_memory_limit(limit))
}

/// Marks the start (`true`) and end of a full collection the host runs itself, so the cycle it
/// completes is reported as forced (see [`SystemLua::on_gc_cycle`]). `system.gc()` marks its own.
/// Marks nest (a finalizer may force a collection inside another): pair every `true` with a
/// `false`.
pub fn mark_forced_collection(lua: &Lua, forced: bool) -> mlua::Result<()> {
    states::with_record(lua, |data: &StateData, _| data.cycles().mark_forced(forced))
}

/// What scripts of the state may do with the module (default: everything).
pub fn permissions(lua: &Lua) -> mlua::Result<Permissions> {
    states::with_record(lua, |data: &StateData, _| data.permissions())
}

/// Sets what scripts of the state may do with the module. A denied call answers
/// `nil, "permission denied: system.<function>"` and changes nothing.
///
/// Where the permissions deny `gc` or `set_gc_percent`, Lua's `collectgarbage` is put under
/// them too (from then on): `collectgarbage("stop")` needs `set_gc_percent`, a collection needs
/// `gc`, reading (`"count"`) needs nothing; a denied call answers
/// `nil, "permission denied: collectgarbage(\"stop\")"`.
pub fn set_permissions(lua: &Lua, permissions: Permissions) -> mlua::Result<()> {
    states::with_record(lua, |data: &StateData, _| data.set_permissions(permissions))?;
    if !permissions.allows_change("gc") || !permissions.allows_change("set_gc_percent") {
        crate::sandbox::gate_collectgarbage(lua)?;
    }
    Ok(())
}

/// Sets the heap profiler's rate for `lua`'s state (see `system.set_heap_profile_rate`) and
/// returns the previous one: on average one sample per `rate` bytes allocated
/// ([`DEFAULT_HEAP_PROFILE_RATE`](crate::DEFAULT_HEAP_PROFILE_RATE) is Go's 512 KiB), 1 for every allocation, 0 to stop.
pub fn set_heap_profile_rate(lua: &Lua, rate: u64) -> mlua::Result<u64> {
    let record = states::published::<StateData>(lua)?;
    // SAFETY: on the locked state, outside any allocation, under a protected call; the record
    // is the state's.
    unsafe { states::with_raw_state(lua, |l| crate::ffi::heap_profiler::set_rate(l, &*record, rate)) }?
        .map_err(|_| mlua::Error::runtime("lua-system: cannot start the heap profiler (not enough memory)"))
}

/// The heap profile of `lua`'s state so far, as a value the host can write in each format or
/// serve (the profiler's memory is the process's, not the Lua heap's).
pub fn heap_profile(lua: &Lua) -> mlua::Result<crate::heap_profile::HeapProfile> {
    Ok(states::published::<StateData>(lua)?.heap_sampler().profile())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module's memory in one state: the Lua objects the module creates (module table,
    /// closures, loader, cycle sentinel) and the Rust-side record. Budget: 16 KiB.
    #[test]
    fn the_module_costs_under_16_kib_per_state() {
        let state = states::AccountedState::new(StateData::exact()).unwrap();
        // SAFETY: the handle is dropped before the state.
        let lua = unsafe { state.lua() };
        lua.load_std_libs(StdLib::ALL_SAFE).unwrap();
        let heap = state.record().heap();
        lua.gc_collect().unwrap();
        let before = heap.live_bytes();
        loader::install::<Module>(&lua).unwrap();
        lua.gc_collect().unwrap();
        let lua_bytes = heap.live_bytes() - before;
        let rust_bytes = std::mem::size_of::<StateData>() as u64;
        println!("module per state: {lua_bytes} bytes of Lua heap + {rust_bytes} bytes of Rust heap");
        assert!(lua_bytes + rust_bytes <= 16 * 1024, "{lua_bytes} + {rust_bytes}");
        drop(lua);
    }
}
