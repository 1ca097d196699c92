//! The heap profiler's contact with Lua: starting it in a state, reading the Lua call stack of
//! a sampled allocation, and knowing which coroutine runs.
//!
//! * The stack is read from inside the allocator with `lua_getstack`/`lua_getinfo("Sln")`,
//!   which neither allocate nor raise, on the thread the allocation is attributed to. Frames
//!   are named as Lua's traceback names them: the function's name in `package.loaded`
//!   (`string.rep`, as Lua 5.4's traceback does; Lua 5.2 and later, where a frame's function
//!   can be identified), else the name the call site gives (`alpha`, or `rep` in 5.1 and
//!   LuaJIT), else `main chunk`, else `function <file.lua:12>`.
//! * Lua 5.4 and 5.5 turn a thread's stack pointers into offsets while they reallocate that
//!   stack, so an allocation made then cannot be walked: it is attributed to the frame
//!   `(stack reallocation)`. Lua 5.1 to 5.3 and LuaJIT keep the old stack valid until the
//!   allocator has returned, and the walk runs before.
//! * Which coroutine runs: the profiler puts `coroutine.resume` and `coroutine.wrap` behind
//!   functions that record the coroutine they resume for as long as it runs (errors and
//!   results pass through unchanged). A coroutine resumed by C code (`lua_resume`) is not
//!   seen: its allocations go to the thread that resumed it.
//! * LuaJIT: the JIT compiler is turned off while the profiler runs (compiled traces have no
//!   Lua stack to read), as for the CPU budget.
//! * New blocks carry the object's type in Lua 5.2 and later (`osize` is its tag); 5.1 and
//!   LuaJIT do not tell, and their samples say `unknown`.

use std::collections::HashMap;
use std::ffi::{CStr, c_int, c_void};

use mlua::ffi::{self, lua_State};

use super::Record;
use crate::heap_profile::Frame;
use crate::heap_sampler::HeapSampler;

/// Why the profiler could not start.
pub(crate) enum NotStarted {
    /// Lua 5.1 and LuaJIT: called from a coroutine, where the main thread cannot be found
    /// without allocating (and a coroutine taken for it could be collected while in use).
    NotMainThread,
    /// Naming the functions or putting the coroutine functions behind the profiler's raised an
    /// error (no memory): nothing was started.
    Failed,
}

/// What the protected start-up fills in.
struct Start {
    names: HashMap<usize, String>,
}

/// Sets the state's sampling rate (bytes; 0 stops, 1 samples every allocation) and returns the
/// previous one. The first start with a rate above 0 names the functions reachable from
/// `package.loaded`, puts the coroutine functions behind the profiler's (both under a protected
/// call), and installs the sampling allocator.
///
/// # Safety
/// `l` is a running thread of the state `record` serves, with a few free stack slots, outside
/// any allocation.
pub(crate) unsafe fn set_rate<R: Record>(l: *mut lua_State, record: &R, rate: u64) -> Result<u64, NotStarted> {
    let sampler = record.heap_sampler();
    // SAFETY: per the contract; the start-up's Lua calls run under `protected::call`, and what
    // runs outside it reads the registry by integer key or sets the allocator (no raise).
    unsafe {
        if rate > 0 && !sampler.started() {
            let main = super::budget_hook::main_thread(l);
            if main.is_null() {
                return Err(NotStarted::NotMainThread);
            }
            let mut start = Start { names: HashMap::new() };
            let data = (&mut start as *mut Start).cast::<c_void>();
            if super::protected::call(l, start_up::<R>, data).is_err() {
                ffi::lua_settop(l, -2);
                return Err(NotStarted::Failed);
            }
            sampler.start(main as usize, start.names);
            let mut ud = std::ptr::null_mut();
            ffi::lua_getallocf(l, &mut ud);
            ffi::lua_setallocf(l, super::lua_alloc::function_for(record, record.heap().watching_peaks()), ud);
        }
        #[cfg(feature = "luajit")]
        if rate > 0 {
            super::budget_hook::jit_off(l);
        }
        Ok(sampler.set_rate(rate))
    }
}

/// The start-up's Lua side, run protected: names the functions, wraps the coroutine functions.
/// Argument 1 is the armed [`Start`]; anything else does nothing.
unsafe extern "C-unwind" fn start_up<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a helper run by `protected::call`; the only Rust value alive across a raising
    // call is the `&mut Start`, owned by the caller outside the protected call.
    unsafe {
        let Some(start) = super::protected::armed::<Start>(l) else {
            return super::protected::NO_RESULTS;
        };
        qualified_names(l, &mut (*start).names);
        track_coroutines::<R>(l);
    }
    super::protected::NO_RESULTS
}

/// Records a sampled allocation: reads the stack of the thread it is attributed to.
///
/// # Safety
/// Called by the state's allocator, before the block is moved or made (the stack is walked
/// while the old one is still valid).
#[cold]
pub(crate) unsafe fn capture(sampler: &HeapSampler) -> Vec<Frame> {
    let thread = sampler.running() as *mut lua_State;
    if thread.is_null() {
        return Vec::new();
    }
    // SAFETY: per the contract; `thread` is the main thread or a coroutine being resumed
    // (held by its resumer's stack), both alive.
    sampler.with_names(|names| unsafe { walk(thread, names) })
}

/// The frames of `thread`, innermost first, at most `MAX_DEPTH + 1`.
unsafe fn walk(thread: *mut lua_State, names: &HashMap<usize, String>) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut ar = std::mem::MaybeUninit::<ffi::lua_Debug>::zeroed();
    let mut level = 0;
    // SAFETY: `lua_getstack` and `lua_getinfo` with "Sln" read the thread's call infos and
    // prototypes without allocating or raising (no 'f' or 'L': nothing is pushed).
    unsafe {
        while ffi::lua_getstack(thread, level, ar.as_mut_ptr()) != 0 {
            if level == 0 && stack_is_moving(ar.as_ptr()) {
                return vec![Frame { function: "(stack reallocation)".into(), file: String::new(), line: 0 }];
            }
            if frames.len() > crate::heap_sampler::MAX_DEPTH {
                break;
            }
            ffi::lua_getinfo(thread, c"Sln".as_ptr(), ar.as_mut_ptr());
            let ar = ar.assume_init_ref();
            let what = text(ar.what);
            let file = if what == "C" { "[C]".to_owned() } else { c_chars(&ar.short_src) };
            let function = match (identity(ar).and_then(|id| names.get(&id)), text(ar.name)) {
                (Some(qualified), _) => qualified.clone(),
                (None, name) if !name.is_empty() => bounded(name),
                _ if what == "main" => "main chunk".to_owned(),
                _ if what == "C" => "?".to_owned(),
                _ => format!("function <{}:{}>", file, ar.linedefined),
            };
            frames.push(Frame { function, file, line: i64::from(ar.currentline.max(0)) });
            level += 1;
        }
    }
    frames
}

fn text(chars: *const std::ffi::c_char) -> String {
    if chars.is_null() {
        return String::new();
    }
    // SAFETY: Lua's debug strings are NUL-terminated and outlive the walk.
    unsafe { CStr::from_ptr(chars) }.to_string_lossy().into_owned()
}

fn c_chars(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The address of a frame's call info (`lua_Debug`'s private last field), Lua 5.2 and later.
#[cfg(not(any(feature = "lua51", feature = "luajit")))]
unsafe fn call_info(ar: *const ffi::lua_Debug) -> *const usize {
    let offset = std::mem::size_of::<ffi::lua_Debug>() - std::mem::size_of::<*const c_void>();
    // SAFETY: `i_ci` (`struct CallInfo *`) is the last field of `lua_Debug` in 5.2 to 5.5,
    // pointer-aligned with no padding after it; `lua_getstack` set it.
    unsafe { *(ar.cast::<u8>().add(offset).cast::<*const usize>()) }
}

/// Whether Lua is reallocating the thread's stack (5.4 and 5.5 keep offsets in place of its
/// pointers meanwhile): the call info's `func` then holds an offset into a stack of at most
/// `LUAI_MAXSTACK` slots, below 2^24, where a pointer is an address far above.
unsafe fn stack_is_moving(ar: *const ffi::lua_Debug) -> bool {
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    // SAFETY: `CallInfo` starts with `func` and `top` (`StkIdRel`), pointer-sized.
    unsafe {
        let ci = call_info(ar);
        return *ci < 1 << 24 || *ci.add(1) < 1 << 24;
    }
    #[allow(unreachable_code)]
    {
        let _ = ar;
        false
    }
}

/// The identity of a frame's function, as `lua_topointer` gives it (the closure, or the C
/// function of a light C function): the first word of the value at the call info's `func`.
#[cfg(not(any(feature = "lua51", feature = "luajit")))]
fn identity(ar: &ffi::lua_Debug) -> Option<usize> {
    // SAFETY: `CallInfo` starts with `func`, a pointer to the stack slot holding the function
    // (checked not to be an offset by `stack_is_moving`); a `TValue` starts with its `Value`.
    unsafe {
        let func = *call_info(ar) as *const usize;
        (!func.is_null()).then(|| *func)
    }
}

#[cfg(any(feature = "lua51", feature = "luajit"))]
fn identity(_: &ffi::lua_Debug) -> Option<usize> {
    None
}

/// The object type a new block's tag names (`osize` of a NULL block).
pub(crate) fn object_type(tag: usize) -> &'static str {
    if cfg!(any(feature = "lua51", feature = "luajit")) {
        return "unknown";
    }
    // 5.4 and 5.5 number upvalues 9 and prototypes 10; 5.2 the other way round; 5.3 has
    // prototypes at 9 and untagged upvalues. Tag 0: no object (an array, a buffer, a stack).
    let (upvalue, proto) = if cfg!(any(feature = "lua54", feature = "lua55")) {
        (9, 10)
    } else if cfg!(feature = "lua52") {
        (10, 9)
    } else {
        (usize::MAX, 9)
    };
    match tag & 0x0f {
        4 => "string",
        5 => "table",
        6 => "function",
        7 => "userdata",
        8 => "thread",
        t if t == upvalue => "upvalue",
        t if t == proto => "proto",
        _ => "other",
    }
}

/// Longest name kept for a frame or a function (a call site can name a function with a string
/// constant of any length): the profiler's memory stays bounded.
const MAX_NAME: usize = 256;

fn bounded(mut name: String) -> String {
    if name.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push('…');
    }
    name
}

/// Pushes `package.loaded` (the registry's `_LOADED`, read raw: no metamethod runs).
///
/// # Safety
/// `l` is running with a free stack slot, under a protected call (the key's string may need
/// memory).
unsafe fn push_loaded(l: *mut lua_State) {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_pushstring(l, c"_LOADED".as_ptr());
        ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
    }
}

/// The qualified names of the functions in `package.loaded`'s tables, by identity, into
/// `names`: `string.rep`, and `print` for the base library, as Lua 5.4's traceback names them.
///
/// # Safety
/// `l` is running, with 4 free stack slots, under a protected call; the stack is restored.
unsafe fn qualified_names(l: *mut lua_State, names: &mut HashMap<usize, String>) {
    // SAFETY: only `push_loaded` may raise (before anything is read); then raw reads with
    // `lua_next` over existing keys allocate nothing, and only string keys are read as text (no
    // conversion in place).
    unsafe {
        let top = ffi::lua_gettop(l);
        push_loaded(l);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, -2) != 0 {
                if ffi::lua_type(l, -2) == ffi::LUA_TSTRING && ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                    let module = bounded(text(ffi::lua_tolstring(l, -2, std::ptr::null_mut())));
                    ffi::lua_pushnil(l);
                    while ffi::lua_next(l, -2) != 0 {
                        if ffi::lua_type(l, -2) == ffi::LUA_TSTRING && ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION {
                            let key = bounded(text(ffi::lua_tolstring(l, -2, std::ptr::null_mut())));
                            let id = ffi::lua_topointer(l, -1) as usize;
                            if module == "_G" {
                                names.entry(id).or_insert(key);
                            } else {
                                names.insert(id, format!("{module}.{key}"));
                            }
                        }
                        ffi::lua_settop(l, -2);
                    }
                }
                ffi::lua_settop(l, -2);
            }
        }
        ffi::lua_settop(l, top);
    }
}

/// Puts `coroutine.resume` and `coroutine.wrap` behind the profiler's own (upvalue 1: the
/// function replaced, a library function any script can call).
unsafe fn track_coroutines<R: Record>(l: *mut lua_State) {
    // SAFETY: under the start-up's protected call (the strings and closures made here may need
    // memory); tables are read and set raw (no metamethod runs); the stack is restored.
    unsafe {
        let top = ffi::lua_gettop(l);
        push_loaded(l);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_pushstring(l, c"coroutine".as_ptr());
            ffi::lua_rawget(l, -2);
        }
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            for (name, wrapper) in
                [(c"resume", resume::<R> as ffi::lua_CFunction), (c"wrap", wrap::<R> as ffi::lua_CFunction)]
            {
                ffi::lua_pushstring(l, name.as_ptr());
                ffi::lua_pushvalue(l, -1);
                ffi::lua_rawget(l, -3);
                if ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION {
                    ffi::lua_pushcclosure(l, wrapper, 1);
                    ffi::lua_rawset(l, -3);
                } else {
                    ffi::lua_settop(l, -3);
                }
            }
        }
        ffi::lua_settop(l, top);
    }
}

/// Calls the value at `function` (an upvalue index) with the frame's values as arguments, with
/// `co` (the thread at `co_index`) recorded as the running coroutine meanwhile; returns the
/// call's status, with its results (or error) from index 2 on. A copy of `co` stays in this
/// frame's slot 1 until the call returns: neither the callee nor a script that replaced the
/// wrapper's upvalues can let it be collected while it is recorded. One rotation puts both
/// below the arguments, and the results are returned from above it (no removal): a resume is
/// the profiler's hottest wrapper.
unsafe fn run_as<R: Record>(l: *mut lua_State, co: *mut lua_State, co_index: c_int, function: c_int) -> c_int {
    // SAFETY: `lua_pcall` catches every error, so the running thread is always restored before
    // anything raises past this frame, which owns nothing to drop. A C function has
    // LUA_MINSTACK free slots.
    unsafe {
        let arguments = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, co_index);
        ffi::lua_pushvalue(l, function);
        ffi::lua_rotate(l, 1, 2); // [co, f, args...]
        let sampler = super::states::record::<R>(l).map(|record| record.heap_sampler());
        let previous = sampler.map(|sampler| sampler.enter(co as usize));
        let status = ffi::lua_pcall(l, arguments, ffi::LUA_MULTRET, 0);
        if let (Some(sampler), Some(previous)) = (sampler, previous) {
            sampler.leave(previous);
        }
        status
    }
}

/// `coroutine.resume`, recording the coroutine it runs.
unsafe extern "C-unwind" fn resume<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua; upvalue 1 is the library's `coroutine.resume`.
    unsafe {
        let co = ffi::lua_tothread(l, 1);
        if co.is_null() {
            // The library's own wording: 5.4 and 5.5 check for a thread, 5.3 expects a
            // thread, 5.1, 5.2 and LuaJIT a coroutine.
            #[cfg(any(feature = "lua54", feature = "lua55"))]
            ffi::luaL_checktype(l, 1, ffi::LUA_TTHREAD);
            let expected = if cfg!(feature = "lua53") { c"thread expected" } else { c"coroutine expected" };
            return ffi::luaL_argerror(l, 1, expected.as_ptr());
        }
        if run_as::<R>(l, co, 1, ffi::lua_upvalueindex(1)) != ffi::LUA_OK {
            ffi::lua_error(l);
        }
        ffi::lua_gettop(l) - 1
    }
}

/// `coroutine.wrap`: the library's function, behind one that records the coroutine it runs.
unsafe extern "C-unwind" fn wrap<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua; upvalue 1 is the library's `coroutine.wrap`, whose
    // result is a C closure holding its coroutine as upvalue 1.
    unsafe {
        super::coroutines::call_original(l);
        if ffi::lua_getupvalue(l, -1, 1).is_null() {
            return 1;
        }
        if ffi::lua_type(l, -1) != ffi::LUA_TTHREAD {
            ffi::lua_settop(l, -2);
            return 1;
        }
        ffi::lua_pushcclosure(l, wrapped::<R>, 2);
        1
    }
}

/// A function made by `coroutine.wrap` (upvalue 1: the library's; 2: its coroutine).
unsafe extern "C-unwind" fn wrapped<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua with the upvalues `wrap` gave it (a script may have
    // replaced them with `debug.setupvalue`: then it calls what it put there, and a coroutine
    // that is not one is not recorded).
    unsafe {
        let co = ffi::lua_tothread(l, ffi::lua_upvalueindex(2));
        let status = if co.is_null() {
            // What the script put there, called as is (after a placeholder for slot 1).
            ffi::lua_pushnil(l);
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
            ffi::lua_rotate(l, 1, 2);
            ffi::lua_pcall(l, ffi::lua_gettop(l) - 2, ffi::LUA_MULTRET, 0)
        } else {
            run_as::<R>(l, co, ffi::lua_upvalueindex(2), ffi::lua_upvalueindex(1))
        };
        if status != ffi::LUA_OK {
            // The library's function added the position of its caller, this C function (none):
            // add the caller's, as it would have (not to a memory error's message).
            #[cfg(any(feature = "lua51", feature = "lua52"))]
            let is_text = ffi::lua_isstring(l, -1) != 0;
            #[cfg(not(any(feature = "lua51", feature = "lua52")))]
            let is_text = ffi::lua_type(l, -1) == ffi::LUA_TSTRING;
            if is_text && status != ffi::LUA_ERRMEM {
                ffi::luaL_where(l, 1);
                ffi::lua_insert(l, -2);
                ffi::lua_concat(l, 2);
            }
            ffi::lua_error(l);
        }
        ffi::lua_gettop(l) - 1 // the results, above slot 1
    }
}
