//! Putting the module into a Lua state, from Rust.
//!
//! * [`SystemLua`]: a state whose every block the module counts, with `require("system")`
//!   available. [`SystemLua::new`] is safe: mlua creates and owns the state, and the module's
//!   allocator counts in front of mlua's from the bare state on (its figures known exactly, see
//!   [`bare_state`]). [`SystemLua::unsafe_new`] lets the module create the state with its own
//!   allocator from the first byte (every standard library, C modules included): the fastest
//!   path, which the `lua-system` runner uses.
//!
//! [`install`](super::install::install) puts the module in a state made elsewhere.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use mlua::{Lua, LuaOptions, StdLib};

use crate::ffi::{foreign, loader, states};
use crate::figures::mem_stats::MemStats;
use crate::functions::Module;
use crate::host::probe::Probe;
use crate::state::cycles::CycleHook;
use crate::state::{Accounting, StateRecord};

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
    owner: Owner,
}

/// Who made the state, and so how the module leaves it.
enum Owner {
    /// The module: it closes the state when the `SystemLua` is dropped.
    Module(states::AccountedState<StateRecord>),
    /// mlua, which closes the state when its last handle is dropped; the module gives mlua its
    /// allocator back when the `SystemLua` is dropped, then drops its record (`Drop`).
    Mlua { lua: Lua, record: Arc<StateRecord> },
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
            Some((bare_bytes, blocks)) if bare_bytes == bytes => StateRecord::chained(chain, bytes, blocks),
            _ => StateRecord::interposed(chain, bytes),
        })?;
        let system = SystemLua { owner: Owner::Mlua { lua, record } };
        system.load_std_libs(libs)?;
        loader::install::<Module>(&system)?;
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
    #[allow(unsafe_code)] // unsafe by contract, as mlua's `Lua::unsafe_new`
    pub unsafe fn unsafe_new() -> mlua::Result<SystemLua> {
        // SAFETY: the caller's contract is ours.
        unsafe { SystemLua::unsafe_new_with(StdLib::ALL) }
    }

    /// [`SystemLua::unsafe_new`] with the given standard libraries (the base library is always
    /// open).
    ///
    /// # Safety
    /// As for [`SystemLua::unsafe_new`].
    #[allow(unsafe_code)] // unsafe by contract, as mlua's `Lua::unsafe_new`
    pub unsafe fn unsafe_new_with(libs: StdLib) -> mlua::Result<SystemLua> {
        // SAFETY: the handle lives in the `AccountedState`, which drops it before closing the
        // state; the caller promises the same for clones.
        let state = unsafe { states::AccountedState::new(StateRecord::exact()) }
            .ok_or_else(|| mlua::Error::MemoryError("lua-system: cannot create a Lua state".into()))?;
        states::publish(state.lua(), Arc::clone(state.record()));
        let system = SystemLua { owner: Owner::Module(state) };
        // As lua.c, the collector waits while the state is built: its first cycle is then the
        // host's work's, and a host that watches cycles from here sees every one `num_gc`
        // counts (Lua 5.2 otherwise ended one while the module loaded, in runs its hash seed
        // made large enough).
        system.gc_stop();
        // Every library, C modules included: the caller accepted that.
        system.load_std_libs(libs)?;
        loader::install::<Module>(&system)?;
        system.gc_restart();
        // The module read the setting while the collector waited: read it again.
        super::install::refresh_gc_setting(&system)?;
        Ok(system)
    }

    fn record(&self) -> &StateRecord {
        match &self.owner {
            Owner::Module(state) => state.record(),
            Owner::Mlua { record, .. } => record,
        }
    }

    /// How the module counts this state's blocks: [`Accounting::Exact`], unless mlua's bare
    /// state did not match the module's calibration (then [`Accounting::Interposed`]).
    pub fn accounting(&self) -> Accounting {
        self.record().accounting()
    }

    /// The module's figures for this state, as `system.mem_stats()` reads them.
    pub fn mem_stats(&self) -> mlua::Result<MemStats> {
        super::install::mem_stats(self)
    }

    /// Reads this state's figures from any thread, without entering Lua (see [`Probe`]): for a
    /// sampler running beside the script (`std::thread::scope` keeps it within the state's life).
    pub fn probe(&self) -> Probe<'_> {
        Probe::new(self.record())
    }

    /// Calls `hook` for every completed collection cycle, from the finalizer that marks its end
    /// (an emergency collection, which runs no finalizers: from the state's allocator, as Lua
    /// asks again for what it was refused): the hook must not call into Lua. Replaces any previous hook; `None` removes it.
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
            Owner::Mlua { lua, record } => foreign::watch_peaks(lua, &**record, watching),
        }
    }

    /// The state's memory limit in bytes, as [`mlua::Lua::set_memory_limit`] takes it: 0 means
    /// no limit. Returns the previous one (0: none). The module's allocator enforces it: past
    /// it, an allocation fails and the script gets Lua's "not enough memory" error, which
    /// `pcall` can catch.
    pub fn set_memory_limit(&self, limit: usize) -> mlua::Result<usize> {
        let previous = super::install::set_memory_limit(self, (limit != 0).then_some(limit))?;
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
        match &self.owner {
            Owner::Module(state) => state.lua(),
            Owner::Mlua { lua, .. } => lua,
        }
    }
}

impl Drop for SystemLua {
    fn drop(&mut self) {
        // `lua_close` runs every finalizer, the cycle sentinel's too: that is no cycle to report.
        self.record().cycles().set_hook(None);
        match &self.owner {
            Owner::Mlua { lua, record } => {
                // mlua closes the state when its last handle goes (maybe later, if the host kept
                // a clone): it gets its allocator back first. Should that fail, the record is
                // kept alive for good rather than dropped while the allocator may still use it.
                if foreign::give_back_to(lua, &**record).is_err() {
                    std::mem::forget(Arc::clone(record));
                }
            }
            // Dropping the owner then drops the handle and closes the state.
            Owner::Module(state) => states::unpublish::<StateRecord>(state.lua()),
        }
    }
}

/// The figures of a bare state as mlua makes it (`Lua::new_with(StdLib::NONE)`, then two full
/// collections): bytes and live blocks, measured once per process in a state the module makes
/// the same way with its own allocator (mlua's setup code is the same for both). A
/// [`SystemLua::new`] state whose bytes match holds exactly these blocks, so the module's
/// counts start from them and cover every block. `None` if the calibration failed.
fn bare_state() -> Option<(u64, u64)> {
    static BARE: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *BARE.get_or_init(|| states::bare_state_figures(StateRecord::exact()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module's memory in one state: the Lua objects the module creates (module table,
    /// closures, loader, cycle sentinel), measured against a plain mlua state with the same
    /// libraries, and the Rust-side record. Budget: 16 KiB.
    #[test]
    fn the_module_costs_under_16_kib_per_state() {
        let settled = |lua: &Lua| {
            lua.gc_collect().unwrap();
            lua.gc_collect().unwrap();
            lua.used_memory() as u64
        };
        let plain = settled(&Lua::new());
        let system = SystemLua::new().unwrap();
        system.load("require('system').allocated()").exec().unwrap();
        let lua_bytes = settled(&system) - plain;
        let rust_bytes = std::mem::size_of::<StateRecord>() as u64;
        println!("module per state: {lua_bytes} bytes of Lua heap + {rust_bytes} bytes of Rust heap");
        assert!(lua_bytes + rust_bytes <= 16 * 1024, "{lua_bytes} + {rust_bytes}");
    }
}
