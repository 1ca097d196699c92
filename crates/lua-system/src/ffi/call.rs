//! How a module function is called: one trampoline for all of them.
//!
//! Each Lua-visible function is a C closure of [`trampoline`] with two upvalues: the registry
//! entry (a `&'static Entry`) and the state's [`StateData`]. The trampoline hands the function a
//! [`Call`] (arguments and state), catches any panic, and pushes exactly two values:
//! `value, nil` on success, `nil, message` on failure.

use std::ffi::{CStr, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use mlua::ffi::{self, lua_State};

use super::Collector;
use crate::faults::{self, Fault};
use crate::memory::MemStats;
use crate::metrics::Metrics;
use crate::permissions::Operation;
use crate::state::StateData;
use crate::text::{Text, text};

/// A module function: reads its arguments from the [`Call`], answers a [`Reply`] or a message.
pub(crate) type ModuleFn = fn(&Call<'_>) -> Result<Reply, Text>;

/// One line of the module's registry (see `module.rs`).
pub(crate) struct Entry {
    pub name: &'static CStr,
    pub function: ModuleFn,
    /// What calling it does, for permissions (`go_max_procs(n)` checks its setting itself).
    pub operation: Operation,
}

impl Entry {
    pub(crate) fn name(&self) -> &'static str {
        self.name.to_str().unwrap_or("?")
    }
}

/// What a successful call returns. `Copy`, so no destructor is pending when Lua may `longjmp`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    Integer(i64),
    Boolean(bool),
    Text(Text),
    /// The statistics; `true` to fill the table passed as argument 1 instead of a new one.
    Stats(MemStats, bool),
    /// The figures in the Prometheus text format, built in a Lua buffer (of any length).
    Metrics(Metrics),
}

/// One argument, as Lua passed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Arg {
    /// Past the last argument.
    Absent,
    Nil,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    /// Any other type, by name.
    Other(&'static str),
}

impl Arg {
    /// Lua's name for the argument's type, as in `bad argument` messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Arg::Absent => "no value",
            Arg::Nil => "nil",
            Arg::Boolean(_) => "boolean",
            Arg::Integer(_) | Arg::Float(_) => "number",
            Arg::Other(name) => name,
        }
    }
}

/// One call of a module function: its arguments and the state it was called from (which may
/// be a coroutine of the state).
pub(crate) struct Call<'a> {
    l: *mut lua_State,
    data: &'a StateData,
    entry: &'static Entry,
}

impl<'a> Call<'a> {
    /// The function's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        self.entry.name()
    }

    pub(crate) fn data(&self) -> &'a StateData {
        self.data
    }

    pub(crate) fn collector(&self) -> Collector {
        // SAFETY: `self.l` is the running state for the whole call.
        unsafe { Collector::new(self.l) }
    }

    /// `Ok` if the state's permissions allow `operation`; otherwise the message of a denied call.
    pub(crate) fn permit(&self, operation: Operation) -> Result<(), Text> {
        if self.data.permissions().allows(operation) {
            Ok(())
        } else {
            Err(text!("permission denied: system.{}", operation.function()))
        }
    }

    /// mlua's handle on the state, for states mlua created (where mlua enforces the memory limit).
    pub(crate) fn mlua(&self) -> Option<&'a mlua::Lua> {
        // SAFETY: only for states made by mlua, whose registry holds mlua's record: this returns
        // that handle, valid while the state runs this call.
        self.data.mlua_limit.then(|| unsafe { mlua::Lua::get_or_init_from_ptr(self.l) })
    }

    /// Coroutines recorded by the `coroutine.create`/`wrap` wrappers (see `coroutines.rs`).
    pub(crate) fn recorded_coroutines(&self) -> u64 {
        // SAFETY: `self.l` is running; a C function has room for LUA_MINSTACK values.
        unsafe { super::coroutines::count_recorded(self.l) }
    }

    /// Argument `n` (1-based). Never raises.
    pub(crate) fn arg(&self, n: c_int) -> Arg {
        let l = self.l;
        // SAFETY: a C function may read any index up to LUA_MINSTACK (20); module functions take
        // at most two arguments. None of these calls allocates or raises.
        unsafe {
            match ffi::lua_type(l, n) {
                ffi::LUA_TNONE => Arg::Absent,
                ffi::LUA_TNIL => Arg::Nil,
                ffi::LUA_TBOOLEAN => Arg::Boolean(ffi::lua_toboolean(l, n) != 0),
                ffi::LUA_TNUMBER if ffi::lua_isinteger(l, n) != 0 => {
                    Arg::Integer(ffi::lua_tointegerx(l, n, ptr::null_mut()))
                }
                ffi::LUA_TNUMBER => Arg::Float(ffi::lua_tonumberx(l, n, ptr::null_mut())),
                ffi::LUA_TSTRING => Arg::Other("string"),
                ffi::LUA_TTABLE => Arg::Other("table"),
                ffi::LUA_TFUNCTION => Arg::Other("function"),
                ffi::LUA_TUSERDATA | ffi::LUA_TLIGHTUSERDATA => Arg::Other("userdata"),
                ffi::LUA_TTHREAD => Arg::Other("thread"),
                _ => Arg::Other("unknown"),
            }
        }
    }
}

/// Builds the Lua function for `entry`: a closure of [`trampoline`] over the entry and `data`.
///
/// # Safety
/// `l` is a running state with room for three values; `data` outlives every call of the
/// closure (it lives until the state is closed).
pub(crate) unsafe fn push_function(l: *mut lua_State, entry: &'static Entry, data: *const StateData) {
    // SAFETY: per the contract; light userdata and C closures over them need no metatables.
    unsafe {
        ffi::lua_pushlightuserdata(l, entry as *const Entry as *mut c_void);
        ffi::lua_pushlightuserdata(l, data as *mut c_void);
        ffi::lua_pushcfunction(l, push_reply);
        ffi::lua_pushcclosure(l, trampoline, 3);
    }
}

/// The C function behind every module function.
unsafe extern "C-unwind" fn trampoline(l: *mut lua_State) -> c_int {
    // SAFETY: `push_function` is the only place that creates this closure, with these two
    // upvalues; the entry is `'static` and the data lives as long as the state.
    let (entry, data) = unsafe {
        let entry = ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const Entry;
        let data = ffi::lua_touserdata(l, ffi::lua_upvalueindex(2)) as *const StateData;
        (&*entry, &*data)
    };
    let call = Call { l, data, entry };
    let run = || {
        if faults::active(Fault::Panic) {
            panic!("injected fault in {}", entry.name());
        }
        call.permit(entry.operation).and_then(|()| (entry.function)(&call))
    };
    let outcome = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(outcome) => outcome,
        Err(_panic) => Err(text!("{}: internal error (a panic was caught)", entry.name())),
    };
    // From here on this frame holds only `Copy` data: a memory error raised while pushing
    // may `longjmp` over it.
    // SAFETY: `l` is the running state; a C function has room for LUA_MINSTACK values.
    unsafe { push_outcome(l, &outcome) }
}

/// Pushes `value, nil` or `nil, message`, and returns 2.
///
/// Values that need memory (strings, tables) are built under `lua_pcall`: if the state is out
/// of memory (its limit reached), the call answers `nil, <Lua's memory error message>` instead
/// of raising.
unsafe fn push_outcome(l: *mut lua_State, outcome: &Result<Reply, Text>) -> c_int {
    // SAFETY: see the callers; every push below has stack room (at most 3 slots used).
    unsafe {
        match outcome {
            Ok(Reply::Integer(value)) => {
                ffi::lua_pushinteger(l, *value);
                ffi::lua_pushnil(l);
            }
            Ok(Reply::Boolean(value)) => {
                ffi::lua_pushboolean(l, *value as c_int);
                ffi::lua_pushnil(l);
            }
            Ok(reply) => {
                if protected_push(l, reply) {
                    ffi::lua_pushnil(l);
                } else {
                    // The error object is on top: answer `nil, error`.
                    ffi::lua_pushnil(l);
                    ffi::lua_rotate(l, -2, 1);
                }
            }
            Err(message) => {
                ffi::lua_pushnil(l);
                protected_push(l, &Reply::Text(*message));
            }
        }
    }
    2
}

/// Pushes the value of `reply` under `lua_pcall`. On failure the error object is pushed instead
/// and false is returned. Runs in the trampoline, whose upvalue 3 is [`push_reply`].
unsafe fn protected_push(l: *mut lua_State, reply: &Reply) -> bool {
    // SAFETY: `push_reply` reads `reply` through the light userdata only during this pcall; a
    // table to refill is argument 1 of the module function, passed on as argument 2.
    unsafe {
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(3));
        ffi::lua_pushlightuserdata(l, reply as *const Reply as *mut c_void);
        let mut arguments = 1;
        if let Reply::Stats(_, true) = reply {
            ffi::lua_pushvalue(l, 1);
            arguments = 2;
        }
        ffi::lua_pcall(l, arguments, 1, 0) == ffi::LUA_OK
    }
}

unsafe extern "C-unwind" fn push_reply(l: *mut lua_State) -> c_int {
    // SAFETY: only `protected_push` calls this, with a pointer to a live `Reply` as argument 1.
    unsafe {
        let reply = &*(ffi::lua_touserdata(l, 1) as *const Reply);
        match reply {
            Reply::Integer(value) => ffi::lua_pushinteger(l, *value),
            Reply::Boolean(value) => ffi::lua_pushboolean(l, *value as c_int),
            Reply::Text(text) => push_bytes(l, text.as_bytes()),
            Reply::Stats(stats, refill) => {
                if *refill {
                    ffi::lua_settop(l, 2);
                } else {
                    ffi::lua_createtable(l, 0, MemStats::LUA_FIELDS);
                }
                stats.write(&mut TableWriter { l });
            }
            Reply::Metrics(metrics) => {
                let mut buffer = std::mem::MaybeUninit::<ffi::luaL_Buffer>::uninit();
                let buffer = buffer.as_mut_ptr();
                ffi::luaL_buffinit(l, buffer);
                // Each line is inline text: nothing here owns a destructor if Lua raises.
                metrics.write_prometheus(|line| ffi::luaL_addlstring(buffer, line.as_ptr().cast(), line.len()));
                ffi::luaL_pushresult(buffer);
            }
        }
    }
    1
}

unsafe fn push_bytes(l: *mut lua_State, bytes: &[u8]) {
    // SAFETY: Lua copies the bytes.
    unsafe {
        ffi::lua_pushlstring(l, bytes.as_ptr().cast(), bytes.len());
    }
}

/// Fills the table on top of the stack. Used only inside `push_reply`, under `lua_pcall`: a
/// memory error raised by a `set_*` unwinds to that pcall, so callers must not hold values
/// with destructors while writing.
pub(crate) struct TableWriter {
    l: *mut lua_State,
}

impl TableWriter {
    pub(crate) fn integer(&mut self, key: &CStr, value: i64) {
        // SAFETY: the table is on top; pushing one value and setting it leaves it there.
        unsafe {
            ffi::lua_pushinteger(self.l, value);
            ffi::lua_setfield(self.l, -2, key.as_ptr());
        }
    }

    /// Removes `key` (a refilled table may hold a field that is now missing).
    pub(crate) fn nil(&mut self, key: &CStr) {
        // SAFETY: as above.
        unsafe {
            ffi::lua_pushnil(self.l);
            ffi::lua_setfield(self.l, -2, key.as_ptr());
        }
    }

    pub(crate) fn text(&mut self, key: &CStr, value: &str) {
        // SAFETY: as above.
        unsafe {
            push_bytes(self.l, value.as_bytes());
            ffi::lua_setfield(self.l, -2, key.as_ptr());
        }
    }

    /// Writes a nested table under `key`, filled by `fill`.
    pub(crate) fn table(&mut self, key: &CStr, fill: impl FnOnce(&mut TableWriter)) {
        // SAFETY: the nested table is on top while `fill` runs, then stored in the outer one.
        unsafe {
            ffi::lua_createtable(self.l, 0, 4);
            fill(self);
            ffi::lua_setfield(self.l, -2, key.as_ptr());
        }
    }
}
