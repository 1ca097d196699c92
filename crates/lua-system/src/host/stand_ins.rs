//! The module's stand-ins (`ffi/stand_in.rs`): `collectgarbage` ([`track_collectgarbage`], and
//! `gc_gate.rs` for what it does) and `os.exit` with the hooks hosts give [`on_exit`]. Upvalue 1
//! of a stand-in is its [`StandIn`] number.

use std::ffi::CStr;
use std::sync::{Arc, Mutex, Weak};

use mlua::Lua;

use super::gc_gate::{self, Token};
use crate::ffi::call::Call;
use crate::ffi::stand_in::{self, StandIns};
use crate::ffi::states;
use crate::figures::mem_stats::MemStats;
use crate::heap_profile::HeapProfile;
use crate::state::StateRecord;
use crate::text::Text;

/// The stand-ins, by number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum StandIn {
    CollectGarbage = 0,
    Exit = 1,
}

impl StandIn {
    const ALL: [StandIn; 2] = [StandIn::CollectGarbage, StandIn::Exit];

    /// Puts the stand-in in front of its function, once (see `stand_in::install`).
    pub(crate) fn install(self, lua: &Lua) -> mlua::Result<Option<bool>> {
        let (table, name) = match self {
            StandIn::CollectGarbage => (None, c"collectgarbage"),
            StandIn::Exit => (Some(c"os"), c"exit"),
        };
        stand_in::install::<Module>(lua, table, name, self as usize)
    }
}

/// The stand-ins as the FFI layer runs them.
pub(crate) struct Module;

impl StandIns for Module {
    type Record = StateRecord;
    type Token = Token;
    const COUNT: usize = StandIn::ALL.len();

    fn name(index: usize) -> &'static CStr {
        match StandIn::ALL[index] {
            StandIn::CollectGarbage => c"collectgarbage",
            StandIn::Exit => c"os.exit",
        }
    }

    fn before(call: &Call<'_, StateRecord>, index: usize) -> Result<Token, Text> {
        match StandIn::ALL[index] {
            StandIn::CollectGarbage => gc_gate::before(call),
            StandIn::Exit => {
                let exiting = Exiting { call };
                for hook in exit_hooks(call.record()) {
                    // One hook's panic neither skips the others nor stops the exit.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&exiting)));
                }
                Ok(Token::default())
            }
        }
    }

    fn after(call: &Call<'_, StateRecord>, index: usize, token: Token) {
        match StandIn::ALL[index] {
            StandIn::CollectGarbage => gc_gate::after(call, token),
            StandIn::Exit => {}
        }
    }
}

/// Puts Lua's `collectgarbage` behind the module's stand-in, once: a collection it runs
/// (`collectgarbage()`, `"collect"`) is reported as forced to the cycle hook
/// ([`SystemLua::on_gc_cycle`](crate::SystemLua::on_gc_cycle)), and after a change of the
/// collector's setting (`"stop"`, `"setpause"`, a mode switch, ...) the module reads it at once,
/// so [`Probe`](crate::Probe) samples and scrapes show the new target. Where the state's
/// permissions deny `gc` or `set_gc_percent`, the same stand-in refuses those changes (it is put
/// in place by [`set_permissions`](crate::set_permissions) then).
///
/// The stand-in is a C function whose upvalues are checked on every call: a script that
/// replaces them with `debug.setupvalue` gets a Lua error. A script with `debug` can also reach
/// Lua's own function through it; the sandbox has no `debug`.
pub fn track_collectgarbage(lua: &Lua) -> mlua::Result<()> {
    StandIn::CollectGarbage.install(lua).map(drop)
}

/// A hook of [`on_exit`].
type ExitHook = Arc<dyn Fn(&Exiting<'_>) + Send + Sync>;

/// Every state's exit hooks, by the state's record (a weak reference: a closed state's hooks
/// go with it, and its record's address is not reused while the entry stays).
static EXIT_HOOKS: Mutex<Vec<(Weak<StateRecord>, ExitHook)>> = Mutex::new(Vec::new());

fn exit_hooks(record: &StateRecord) -> Vec<ExitHook> {
    let hooks = EXIT_HOOKS.lock().unwrap_or_else(|poison| poison.into_inner());
    hooks
        .iter()
        .filter(|(state, _)| std::ptr::eq(state.as_ptr(), record) && state.strong_count() > 0)
        .map(|(_, hook)| Arc::clone(hook))
        .collect()
}

/// What a hook of [`on_exit`] reads of the state a script is leaving, on the thread that
/// called `os.exit`.
pub struct Exiting<'a> {
    call: &'a Call<'a, StateRecord>,
}

impl Exiting<'_> {
    /// The state's figures now, as [`mem_stats`](crate::mem_stats) reads them.
    pub fn mem_stats(&self) -> MemStats {
        MemStats::read(self.call.record(), &self.call.collector())
    }

    /// The state's heap profile so far, as [`heap_profile`](crate::heap_profile()) gives it.
    pub fn heap_profile(&self) -> HeapProfile {
        self.call.record().heap_sampler().profile()
    }
}

/// Runs `hook` whenever a script of `lua`'s state calls `os.exit`, before the call (which ends
/// the process): the host's last step, such as writing its outputs (the runner's `--stats`,
/// `--mem-profile`, `--heap-profile`). `os.exit` is put behind the module's stand-in, a C
/// function whose upvalues are checked on every call (see
/// [`track_collectgarbage`](crate::track_collectgarbage)). Without an `os.exit` (the sandbox)
/// the hook is kept but never runs. The hook must not panic (a panic is caught, and the
/// remaining hooks and the exit go on).
pub fn on_exit(lua: &Lua, hook: impl Fn(&Exiting<'_>) + Send + Sync + 'static) -> mlua::Result<()> {
    let record = states::published::<StateRecord>(lua)?;
    {
        let mut hooks = EXIT_HOOKS.lock().unwrap_or_else(|poison| poison.into_inner());
        hooks.retain(|(state, _)| state.strong_count() > 0);
        hooks.push((Arc::downgrade(&record), Arc::new(hook)));
    }
    StandIn::Exit.install(lua).map(drop)
}
