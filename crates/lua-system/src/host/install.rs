//! The module in a state made elsewhere ([`install`]), and what a host can do with any state the
//! module is installed in, by its `mlua::Lua`: read its figures, set its memory limit and
//! permissions, profile its heap, open a reserve past its limit.

use std::sync::Arc;

use mlua::{Lua, Table};

use crate::ffi::collector::Busy;
use crate::ffi::{foreign, heap_profiler, loader, states};
use crate::figures::mem_stats::MemStats;
use crate::functions::Module;
use crate::functions::permissions::Permissions;
use crate::heap_profile::HeapProfile;
use crate::state::StateRecord;

/// Makes `require("system")` work in `lua`, a state created elsewhere, and returns the module
/// table. Installing twice is harmless: the same record is reused.
///
/// The module puts its allocator in front of the state's own and counts from then on: bytes in
/// use are exact, block counts cover the blocks allocated since ([`Accounting::Interposed`](crate::Accounting::Interposed)).
/// Create the state with [`SystemLua`](crate::SystemLua) for every block counted. After this, mlua's own memory
/// functions (`Lua::set_memory_limit`) answer that memory control is not available (its
/// allocator is no longer in front): use [`set_memory_limit`].
pub fn install(lua: &Lua) -> mlua::Result<Table> {
    foreign::attach_to(lua, StateRecord::interposed)?;
    loader::install::<Module>(lua)
}

/// The module's figures for `lua`, as `system.mem_stats()` reads them.
pub fn mem_stats(lua: &Lua) -> mlua::Result<MemStats> {
    states::with_record(lua, |record: &StateRecord, collector| MemStats::read(record, collector))
}

/// The collector's percent, as `system.get_gc_percent()` answers (-1: stopped). Reading it
/// refreshes the module's record of the setting, as [`refresh_gc_setting`] does.
pub fn gc_percent(lua: &Lua) -> mlua::Result<i64> {
    states::with_record(lua, |record: &StateRecord, collector| {
        record.cycles().refresh_setting(collector, record.heap().live_bytes())
    })?
    .map_err(|Busy| mlua::Error::runtime(format!("lua-system: {}", Busy::REASON)))
}

/// Reads the collector's setting into the module's record of the state: a script may change the
/// collector without the module (`collectgarbage("stop")`, `"setpause"`, a mode switch), and
/// what [`SystemLua::probe`](crate::SystemLua::probe) samples and a scrape of
/// [`WatchedStates`](crate::WatchedStates) shows is the record, not Lua. Call it after such a
/// change (the runner does after every `collectgarbage` that may change the setting). Lua
/// refuses while it runs finalizers: the record then stays as it was.
pub fn refresh_gc_setting(lua: &Lua) -> mlua::Result<()> {
    gc_percent(lua).map(drop).or_else(|error| match error {
        mlua::Error::RuntimeError(_) => Ok(()),
        other => Err(other),
    })
}

/// The state's memory limit in bytes (`None`: no limit). See [`set_memory_limit`].
pub fn memory_limit(lua: &Lua) -> mlua::Result<Option<usize>> {
    states::with_record(lua, |record: &StateRecord, _| record.heap().memory_limit())
}

/// Sets the state's memory limit in bytes (`None`: no limit) and returns the previous one.
/// Past the limit, an allocation fails and the script gets Lua's "not enough memory" error,
/// which `pcall` can catch; freeing memory makes room again. A limit below the bytes in use is
/// accepted and stops growth.
pub fn set_memory_limit(lua: &Lua, limit: Option<usize>) -> mlua::Result<Option<usize>> {
    let record = states::published::<StateRecord>(lua)?;
    if crate::functions::STOCK_LUAJIT && limit.is_some() && record.accounting() == crate::state::Accounting::Interposed
    {
        return Err(mlua::Error::runtime(format!(
            "lua-system: set_memory_limit: {}",
            crate::functions::LUAJIT_INTERPOSED
        )));
    }
    if limit.is_some() {
        states::contain_state(lua, &*record)?;
    }
    states::with_record(lua, |record: &StateRecord, _| record.heap().set_memory_limit(limit))
}

/// Marks the start (`true`) and end of a full collection the host runs itself, so the cycle it
/// completes is reported as forced (see [`SystemLua::on_gc_cycle`](crate::SystemLua::on_gc_cycle)). `system.gc()` marks its own.
/// Marks nest (a finalizer may force a collection inside another): pair every `true` with a
/// `false`.
pub fn mark_forced_collection(lua: &Lua, forced: bool) -> mlua::Result<()> {
    states::with_record(lua, |record: &StateRecord, _| record.cycles().mark_forced(forced))
}

/// What scripts of the state may do with the module (default: everything).
pub fn permissions(lua: &Lua) -> mlua::Result<Permissions> {
    states::with_record(lua, |record: &StateRecord, _| Permissions::from_bits(record.permission_bits()))
}

/// Sets what scripts of the state may do with the module. A denied call answers
/// `nil, "permission denied: system.<function>"` and changes nothing.
///
/// Where the permissions deny `gc` or `set_gc_percent`, Lua's `collectgarbage` is put under
/// them too (from then on): `collectgarbage("stop")` needs `set_gc_percent`, a collection needs
/// `gc`, reading (`"count"`) needs nothing; a denied call answers
/// `nil, "permission denied: collectgarbage(\"stop\")"`.
pub fn set_permissions(lua: &Lua, permissions: Permissions) -> mlua::Result<()> {
    let (bits, visible_families) = (permissions.to_bits(), permissions.visible_families());
    states::with_record(lua, |record: &StateRecord, _| record.set_permission_bits(bits, visible_families))?;
    if !permissions.allows_change("gc") || !permissions.allows_change("set_gc_percent") {
        super::stand_ins::track_collectgarbage(lua)?;
    }
    Ok(())
}

/// Sets the heap profiler's rate for `lua`'s state (see `system.set_heap_profile_rate`) and
/// returns the previous one: on average one sample per `rate` bytes allocated
/// ([`DEFAULT_HEAP_PROFILE_RATE`](crate::DEFAULT_HEAP_PROFILE_RATE) is Go's 512 KiB), 1 for every allocation, 0 to stop.
pub fn set_heap_profile_rate(lua: &Lua, rate: u64) -> mlua::Result<u64> {
    let record = states::published::<StateRecord>(lua)?;
    heap_profiler::set_rate_of(lua, &*record, rate)?
        .map_err(|_| mlua::Error::runtime("lua-system: cannot start the heap profiler (not enough memory)"))
}

/// The heap profile of `lua`'s state so far, as a value the host can write in each format or
/// serve (the profiler's memory is the process's, not the Lua heap's).
pub fn heap_profile(lua: &Lua) -> mlua::Result<HeapProfile> {
    Ok(states::published::<StateRecord>(lua)?.heap_sampler().profile())
}

/// Room past a state's memory limit for a host's last words: the error report and the exit
/// path. At the limit, a script's `error("boom")` cannot build its message, a message handler
/// cannot build its traceback and a wrapped `os.exit` cannot make its call; a host opens the
/// reserve around just those steps, so the script's own message and exit code survive.
///
/// The state's heap never exceeds its limit by more than the largest reserve opened (opening
/// again replaces the reserve, it does not add to it), so a reserve left open by a Lua error
/// raised inside it keeps that bound; close it when the protected call returns. Obtained with
/// [`memory_reserve`]; cloning shares it.
#[derive(Clone)]
pub struct MemoryReserve(Arc<StateRecord>);

impl MemoryReserve {
    /// What the runner reserves: enough for a traceback of Lua's 22 frames, an error message
    /// with its position, and an mlua callback.
    pub const DEFAULT_BYTES: usize = 64 * 1024;

    /// Lets the state hold up to `bytes` past its limit until [`close`](Self::close).
    pub fn open(&self, bytes: usize) {
        self.0.heap().open_reserve(bytes);
    }

    /// Applies the limit exactly again.
    pub fn close(&self) {
        self.0.heap().close_reserve();
    }
}

/// The memory reserve of `lua`'s state (see [`MemoryReserve`]). Fails if the module is not
/// installed in the state.
pub fn memory_reserve(lua: &mlua::Lua) -> mlua::Result<MemoryReserve> {
    states::published::<StateRecord>(lua).map(MemoryReserve)
}
