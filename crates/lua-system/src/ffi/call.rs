//! How a module function is called: one trampoline for all of them.
//!
//! Each Lua-visible function is a C closure of [`trampoline`] with one upvalue: its index in the
//! module's registry (an integer; a script that changes it with `debug.setupvalue` gets another
//! function of the module, still checked against the state's permissions, or an error). The
//! trampoline finds the state's record through its allocator, hands the function a [`Call`]
//! (arguments, record, collector), catches any panic, and pushes exactly two values:
//! `value, nil` on success, `nil, message` on failure.
//!
//! A function answers with a `Copy` value, pushed after the function has returned: when Lua
//! raises a memory error while pushing, it unwinds (`longjmp`) over frames that own nothing.
//! Values that need memory are pushed under a protected call, so even a state at its memory
//! limit answers `nil, message` instead of raising. The types hold that rule: an integer or a
//! boolean is a [`Scalar`], pushed anywhere; everything else is pushed through an [`Out`], which
//! exists only inside the protected call.
//!
//! The common call answers a scalar: it is pushed where the function's answer was written, and
//! nothing the answer may carry (a statistics table's figures, a message) is copied or
//! formatted. Failures are formatted into their message only when they happen
//! ([`Module::message`]). `bench/cost-gate` holds every cheap function to at most
//! `collectgarbage("count")` in instructions per call.

use std::ffi::{CStr, c_int};
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use mlua::ffi::{self, lua_State};

use super::{Collector, Record, protected, states};
use crate::text::Text;

/// The module's registry of functions, as the trampoline sees it (implemented in `functions/mod.rs`).
pub(crate) trait Module: 'static {
    type Record: Record;
    /// What a successful call answers.
    type Value: Value;

    /// The functions' names, in registry order: the keys of the module table.
    fn names() -> impl Iterator<Item = &'static CStr>;

    /// Why a call failed, before its message is formatted ([`Module::message`]).
    type Failure: Copy;

    /// Runs function `index` of the registry.
    fn run(call: &Call<'_, Self::Record>, index: usize) -> Result<Self::Value, Self::Failure>;

    /// The whole message of a failure of function `index`, function name included. Called only
    /// when a call fails.
    fn message(index: usize, failure: &Self::Failure) -> Text;

    /// The message when function `index` panicked, or when the state has no record.
    fn failed(index: usize, what: &str) -> Text;
}

/// A value a module function answers.
pub(crate) trait Value: Copy + 'static {
    /// The value as a scalar, pushed without memory; `None` for a value that needs memory,
    /// pushed by [`Value::push`] under a protected call.
    fn scalar(&self) -> Option<Scalar>;

    /// Pushes exactly one value (one that needs memory: [`Value::scalar`] said `None`). An
    /// [`Out`] exists only under a protected call.
    fn push(&self, out: &mut Out);

    /// Whether the value is written into the table the function got as argument 1 (so no
    /// garbage is made by a monitoring loop), rather than into a new one.
    fn refills_argument(&self) -> bool {
        false
    }
}

/// A value pushed without memory: no protected call needed, nothing can raise.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scalar {
    Integer(i64),
    Boolean(bool),
}

/// Pushes a scalar.
///
/// # Safety
/// `l` is running, with a free stack slot.
unsafe fn push_scalar(l: *mut lua_State, scalar: Scalar) {
    // SAFETY: per the contract; neither push allocates.
    unsafe {
        match scalar {
            Scalar::Integer(value) => ffi::lua_pushinteger(l, value),
            Scalar::Boolean(value) => ffi::lua_pushboolean(l, value as c_int),
        }
    }
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

/// One call of a module function: its arguments and the state it was called from (which may be
/// a coroutine of the state).
pub(crate) struct Call<'a, R> {
    l: *mut lua_State,
    record: &'a R,
}

impl<'a, R: Record> Call<'a, R> {
    /// A call running on `l`, whose state `record` serves.
    pub(super) fn new(l: *mut lua_State, record: &'a R) -> Call<'a, R> {
        Call { l, record }
    }

    pub(crate) fn record(&self) -> &'a R {
        self.record
    }

    pub(crate) fn collector(&self) -> Collector {
        // SAFETY: `self.l` is the running state for the whole call; the cache is its record's.
        unsafe { Collector::with_internals(self.l, self.record.internals()) }
    }

    /// Coroutines of the state that can still run, the calling one included if it is one
    /// (`coroutines.rs`).
    pub(crate) fn alive_coroutines(&self) -> u64 {
        // SAFETY: `l` runs this call; the record's thread blocks are its state's.
        unsafe {
            if super::coroutines::ALLOCATOR_SEES_THREADS {
                super::coroutines::count_alive_blocks(self.record.thread_blocks())
            } else {
                super::coroutines::count_alive_recorded(self.l)
            }
        }
    }

    /// Argument `n` as the bytes of a Lua string (`None`: not a string; a number is not
    /// converted). Never raises or allocates; the bytes live as long as the call.
    pub(crate) fn string(&self, n: c_int) -> Option<&'a [u8]> {
        // SAFETY: a string argument stays on the stack, unchanged, for the whole call.
        unsafe {
            if ffi::lua_type(self.l, n) != ffi::LUA_TSTRING {
                return None;
            }
            let mut len = 0;
            let bytes = ffi::lua_tolstring(self.l, n, &mut len);
            Some(std::slice::from_raw_parts(bytes.cast::<u8>(), len))
        }
    }

    /// Sets the heap profiler's rate in the calling state and returns the previous one
    /// (`ffi/heap_profiler.rs`).
    pub(crate) fn set_heap_profile_rate(&self, rate: u64) -> Result<u64, super::heap_profiler::NotStarted> {
        // SAFETY: `l` runs this call, outside any allocation; the record is its state's.
        unsafe { super::heap_profiler::set_rate(self.l, self.record, rate) }
    }

    /// How many arguments the call has.
    pub(crate) fn count(&self) -> c_int {
        // SAFETY: `l` runs this call; reading the top never raises.
        unsafe { ffi::lua_gettop(self.l) }
    }

    /// Gives the calling state an arena of its own, so that its memory limit bounds its
    /// resident pages (`states::contain`).
    pub(crate) fn contain(&self) {
        // SAFETY: `l` runs this call, between two allocations; the record is its state's.
        unsafe { states::contain(self.l, self.record) }
    }

    /// Whether argument `n` (1-based) is absent or nil: [`Call::arg`]'s `Absent | Nil`, with one
    /// type query. Never raises.
    pub(crate) fn lacks(&self, n: c_int) -> bool {
        // SAFETY: as in `arg`.
        unsafe { ffi::lua_type(self.l, n) <= ffi::LUA_TNIL }
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

/// Pushes the module table: one closure of [`trampoline`] per registry entry.
///
/// # Safety
/// `l` is a running state with room for three values; the caller runs this protected (it
/// allocates).
pub(crate) unsafe fn push_module<M: Module>(l: *mut lua_State) {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_createtable(l, 0, M::names().count() as c_int);
        for (index, name) in M::names().enumerate() {
            ffi::lua_pushinteger(l, index as ffi::lua_Integer);
            ffi::lua_pushcclosure(l, trampoline::<M>, 1);
            ffi::lua_setfield(l, -2, name.as_ptr());
        }
    }
}

/// The C function behind every module function.
unsafe extern "C-unwind" fn trampoline<M: Module>(l: *mut lua_State) -> c_int {
    // SAFETY: reading an upvalue and the allocator never raises; the record outlives the call.
    let (index, record) = unsafe {
        let mut is_integer = 0;
        let index = ffi::lua_tointegerx(l, ffi::lua_upvalueindex(1), &mut is_integer);
        let index = if is_integer != 0 { usize::try_from(index).unwrap_or(usize::MAX) } else { usize::MAX };
        (index, states::record::<M::Record>(l))
    };
    // A record whose owner let go of the state (`foreign::give_back_to`) is gone for scripts.
    let record = record.filter(|record| !record.chain().is_some_and(super::lua_alloc::Chain::handed_over));
    let Some(record) = record else {
        let message = M::failed(index, "the module's record of this state is gone (the state is closing)");
        // SAFETY: `l` is the running state; a C function has room for LUA_MINSTACK values.
        return unsafe { push_outcome::<M::Value>(l, &Err(message)) };
    };
    if record.sentinel().missing() {
        // SAFETY: `l` is running; arming leaves the stack as it found it.
        unsafe { super::sentinel::arm::<M::Record>(l, record) };
    }
    let call = Call { l, record };
    // The answer of a call that is not pushed at once: a value that needs memory, or a failure's
    // message. Written at most once, and read only when the closure says so.
    let mut later = MaybeUninit::<Result<M::Value, Text>>::uninit();
    // The closure answers whether it pushed, not the function's answer: what `catch_unwind`
    // returns is moved out of it whole, and an answer may hold a whole `MemStats`.
    let pushed = catch_unwind(AssertUnwindSafe(|| match M::run(&call, index) {
        Ok(value) => match value.scalar() {
            Some(scalar) => {
                // SAFETY: `l` is the running state, with room for LUA_MINSTACK values; a
                // scalar and nil are pushed without raising.
                unsafe {
                    push_scalar(l, scalar);
                    ffi::lua_pushnil(l);
                }
                true
            }
            None => {
                later.write(Ok(value));
                false
            }
        },
        Err(failure) => {
            later.write(Err(M::message(index, &failure)));
            false
        }
    }));
    let failed;
    let outcome = match pushed {
        Ok(true) => return 2,
        // SAFETY: the closure wrote `later` before answering false.
        Ok(false) => unsafe { later.assume_init_ref() },
        Err(panic) => {
            drop(panic); // freed before anything is pushed
            failed = Err(M::failed(index, "internal error (a panic was caught)"));
            &failed
        }
    };
    // From here on this frame holds only `Copy` data: a memory error raised while pushing may
    // `longjmp` over it.
    // SAFETY: `l` is the running state; a C function has room for LUA_MINSTACK values.
    unsafe { push_outcome(l, outcome) }
}

/// What a protected push pushes.
#[derive(Clone, Copy)]
enum Item<V> {
    Value(V),
    Message(Text),
}

/// Pushes `value, nil` or `nil, message`, and returns 2. Values that need memory are pushed
/// protected: if the state is out of memory, the call answers `nil, <Lua's error>` instead.
unsafe fn push_outcome<V: Value>(l: *mut lua_State, outcome: &Result<V, Text>) -> c_int {
    // SAFETY: see the callers; every push below has stack room (at most 3 slots used).
    unsafe {
        match outcome {
            Ok(value) if let Some(scalar) = value.scalar() => {
                push_scalar(l, scalar);
                ffi::lua_pushnil(l);
            }
            Ok(value) => {
                if protected_push(l, &Item::Value(*value)) {
                    ffi::lua_pushnil(l);
                } else {
                    // The error object is on top: answer `nil, error`.
                    ffi::lua_pushnil(l);
                    ffi::lua_rotate(l, -2, 1);
                }
            }
            Err(message) => {
                ffi::lua_pushnil(l);
                protected_push(l, &Item::<V>::Message(*message));
            }
        }
    }
    2
}

/// Registry slots through which Lua 5.1 and LuaJIT pass a protected push its table argument and
/// return its value (their protected call without allocation, `lua_cpcall`, takes one argument
/// and returns no values). Both keys are made when the module is loaded (`prepare_slots`) and
/// only ever set to a value or `false`, never `nil`, so setting them later needs no memory.
#[cfg(any(feature = "lua51", feature = "luajit"))]
static RESULT_SLOT: u8 = 0;
#[cfg(any(feature = "lua51", feature = "luajit"))]
static ARGUMENT_SLOT: u8 = 0;

#[cfg(any(feature = "lua51", feature = "luajit"))]
fn slot(key: &'static u8) -> *const std::ffi::c_void {
    key as *const u8 as *const std::ffi::c_void
}

/// Makes the registry slots of protected pushes (Lua 5.1 and LuaJIT; nothing elsewhere).
///
/// # Safety
/// `l` is running, protected (this allocates), with room for two values.
pub(crate) unsafe fn prepare_slots(l: *mut lua_State) {
    #[cfg(any(feature = "lua51", feature = "luajit"))]
    // SAFETY: per the contract.
    unsafe {
        for key in [slot(&RESULT_SLOT), slot(&ARGUMENT_SLOT)] {
            ffi::lua_pushboolean(l, 0);
            ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key);
        }
    }
    let _ = l;
}

/// Pushes the item under a protected call. On failure the error object is pushed instead and
/// false is returned.
unsafe fn protected_push<V: Value>(l: *mut lua_State, item: &Item<V>) -> bool {
    let data = item as *const Item<V> as *mut Item<V>;
    let refill = matches!(item, Item::Value(value) if value.refills_argument());
    // SAFETY: `push_item` reads the item only during this call; slots are made at load time.
    unsafe {
        #[cfg(not(any(feature = "lua51", feature = "luajit")))]
        {
            ffi::lua_pushcfunction(l, push_item::<V>);
            ffi::lua_pushlightuserdata(l, data.cast());
            if refill {
                ffi::lua_pushvalue(l, 1);
            }
            let previous = protected::arm(data);
            let status = ffi::lua_pcall(l, 1 + refill as c_int, 1, 0);
            protected::restore(previous);
            status == ffi::LUA_OK
        }
        #[cfg(any(feature = "lua51", feature = "luajit"))]
        {
            if refill {
                ffi::lua_pushvalue(l, 1);
                ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, slot(&ARGUMENT_SLOT));
            }
            let ok = protected::call(l, push_item::<V>, data).is_ok();
            if ok {
                ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, slot(&RESULT_SLOT));
            }
            for key in [slot(&ARGUMENT_SLOT), slot(&RESULT_SLOT)] {
                ffi::lua_pushboolean(l, 0);
                ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key);
            }
            ok
        }
    }
}

/// Pushes the armed item: as its result (Lua 5.2 and later), or into the result slot.
unsafe extern "C-unwind" fn push_item<V: Value>(l: *mut lua_State) -> c_int {
    // SAFETY: the armed pointer is a live `Item<V>` owned by `protected_push`'s caller.
    unsafe {
        let Some(item) = protected::armed::<Item<V>>(l) else {
            return protected::NO_RESULTS;
        };
        let refill = match &*item {
            Item::Value(value) if value.refills_argument() => {
                #[cfg(any(feature = "lua51", feature = "luajit"))]
                ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, slot(&ARGUMENT_SLOT));
                #[cfg(not(any(feature = "lua51", feature = "luajit")))]
                ffi::lua_pushvalue(l, 2);
                if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
                    return protected::NO_RESULTS; // tampered with: push nothing
                }
                ffi::lua_gettop(l)
            }
            _ => 0,
        };
        match &*item {
            Item::Value(value) => value.push(&mut Out { l, refill }),
            Item::Message(text) => push_bytes(l, text.as_bytes()),
        }
        #[cfg(any(feature = "lua51", feature = "luajit"))]
        {
            ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, slot(&RESULT_SLOT));
            protected::NO_RESULTS
        }
        #[cfg(not(any(feature = "lua51", feature = "luajit")))]
        {
            1
        }
    }
}

unsafe fn push_bytes(l: *mut lua_State, bytes: &[u8]) {
    // SAFETY: Lua copies the bytes.
    unsafe {
        ffi::lua_pushlstring(l, bytes.as_ptr().cast(), bytes.len());
    }
}

/// Where a [`Value`] that needs memory pushes itself. Made only by [`push_item`], which runs
/// under a protected call: a memory error raised by any method here unwinds to it, over frames
/// that must own no destructor (the values pushed are `Copy`, and so is what they are built
/// from).
pub(crate) struct Out {
    l: *mut lua_State,
    /// Stack index of the table to refill (0: none).
    refill: c_int,
}

impl Out {
    pub(crate) fn integer(&mut self, value: i64) {
        // SAFETY: one slot; pushing an integer needs no memory.
        unsafe { ffi::lua_pushinteger(self.l, value) }
    }

    pub(crate) fn boolean(&mut self, value: bool) {
        // SAFETY: as above.
        unsafe { ffi::lua_pushboolean(self.l, value as c_int) }
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        // SAFETY: one slot; runs protected (needs memory).
        unsafe { push_bytes(self.l, bytes) }
    }

    /// A new table with room for `fields` keys, filled by `fill`.
    pub(crate) fn table(&mut self, fields: c_int, fill: impl FnOnce(&mut TableWriter)) {
        // SAFETY: the table is on top while `fill` runs.
        unsafe { ffi::lua_createtable(self.l, 0, fields) };
        fill(&mut TableWriter { l: self.l });
    }

    /// The table the function got as argument 1, filled by `fill` (see
    /// [`Value::refills_argument`]).
    pub(crate) fn refill_argument(&mut self, fill: impl FnOnce(&mut TableWriter)) {
        // SAFETY: `refill` indexes a table of this frame (checked by `push_item`).
        unsafe { ffi::lua_pushvalue(self.l, self.refill) };
        fill(&mut TableWriter { l: self.l });
    }

    /// A string built piece by piece in a Lua buffer (any length).
    pub(crate) fn buffer(&mut self, fill: impl FnOnce(&mut dyn FnMut(&[u8]))) {
        let mut buffer = std::mem::MaybeUninit::<ffi::luaL_Buffer>::uninit();
        let buffer = buffer.as_mut_ptr();
        // SAFETY: the buffer lives in this frame until `luaL_pushresult`; pieces are copied.
        unsafe { ffi::luaL_buffinit(self.l, buffer) };
        fill(&mut |piece: &[u8]| {
            // SAFETY: the buffer was initialised above and is pushed only after `fill` returns;
            // the piece is copied into it.
            unsafe { ffi::luaL_addlstring(buffer, piece.as_ptr().cast(), piece.len()) }
        });
        // SAFETY: as above.
        unsafe { ffi::luaL_pushresult(buffer) };
    }
}

/// Fills the table on top of the stack. Made only by [`Out`], so only under a protected call: a
/// memory error raised by a setter unwinds to it, so callers hold nothing with a destructor.
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

    pub(crate) fn bytes(&mut self, key: &CStr, value: &[u8]) {
        // SAFETY: as above.
        unsafe {
            push_bytes(self.l, value);
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
