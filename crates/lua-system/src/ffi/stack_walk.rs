//! The Lua call stack of a sampled allocation, read from inside the allocator, for the heap
//! profiler (`heap_profiler.rs` starts it).
//!
//! * The stack is read with `lua_getstack`/`lua_getinfo("Sln")`, which neither allocate nor
//!   raise, on the thread the allocation is attributed to. Frames are named as Lua's traceback
//!   names them: the function's name in `package.loaded` (`string.rep`, as Lua 5.4's traceback
//!   does; Lua 5.2 and later, where a frame's function can be identified), else the name the
//!   call site gives (`alpha`, or `rep` in 5.1 and LuaJIT), else `main chunk`, else
//!   `function <file.lua:12>`.
//! * Lua 5.4 and 5.5 turn a thread's stack pointers into offsets while they reallocate that
//!   stack, so an allocation made then cannot be walked: it is attributed to the frame
//!   `(stack reallocation)`. Lua 5.1 to 5.3 and LuaJIT keep the old stack valid until the
//!   allocator has returned, and the walk runs before.
//! * New blocks carry the object's type in Lua 5.2 and later (`osize` is its tag); 5.1 and
//!   LuaJIT do not tell, and their samples say `unknown`.

use std::collections::HashMap;
use std::ffi::CStr;

use mlua::ffi::{self, lua_State};

use crate::accounts::heap_sampler::{HeapSampler, MAX_DEPTH};
use crate::accounts::running::RunningThread;
use crate::heap_profile::Frame;

/// Records a sampled allocation: reads the stack of the thread it is attributed to.
///
/// # Safety
/// Called by the state's allocator, before the block is moved or made (the stack is walked
/// while the old one is still valid).
#[cold]
pub(crate) unsafe fn capture(sampler: &HeapSampler, running: &RunningThread) -> Vec<Frame> {
    let thread = running.running() as *mut lua_State;
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
            if frames.len() > MAX_DEPTH {
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

pub(crate) fn text(chars: *const std::ffi::c_char) -> String {
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
    let offset = std::mem::size_of::<ffi::lua_Debug>() - std::mem::size_of::<*const std::ffi::c_void>();
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

pub(crate) fn bounded(mut name: String) -> String {
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
