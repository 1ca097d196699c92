//! How lua.c runs code, with the Lua C API (with `last_words.rs` and `cpu_backstop.rs`, the
//! runner's unsafe code).
//!
//! A chunk (`-e`, `LUA_INIT`, the script, stdin, a REPL line) is loaded and called under a
//! message handler, as lua.c's `docall` does, so errors read exactly as lua.c prints them: the
//! message, or `(error object is a table value)`, or the result of the object's `__tostring`
//! without a traceback, followed by the traceback lua.c shows (the frames of the running code,
//! then `[C]: in ?` for the C function that runs it, as lua.c's `pmain`). While a chunk runs,
//! SIGINT stops it with lua.c's catchable `interrupted!` error (a second SIGINT kills the
//! process, as in lua.c).

use std::ffi::{CString, c_int};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use lua_system::SystemLua;
use lua_system::mlua::{self, Lua, StdLib};

use crate::warnings::Warnings;
use mlua::ffi::{self, lua_State};

/// What to run.
pub enum Chunk<'a> {
    /// Source (or a precompiled chunk) named `name` (`=(command line)`, `=stdin`, ...).
    Code { source: &'a [u8], name: &'a str },
    /// A file, loaded by `luaL_loadfile` as lua.c does (a first `#` line skipped, binary chunks
    /// accepted, its error messages); `None` is stdin.
    File(Option<&'a str>),
}

/// What running a chunk gave.
pub enum Outcome {
    /// It ran; its results were passed to `print` if asked (the REPL).
    Ran,
    /// It did not load (no such file, a syntax error): the message lua.c reports.
    NotLoaded(Vec<u8>),
    /// It raised an error: the message lua.c reports (with the traceback); `None` for a `nil`
    /// error object, of which lua.c 5.1 and luajit.c print nothing.
    Failed(Option<Vec<u8>>),
    /// It did not compile because it ended too early (for the REPL: read another line); the
    /// syntax error.
    Incomplete(Vec<u8>),
}

/// The arguments a chunk is called with.
pub enum Args<'a> {
    /// These.
    Given(&'a [&'a [u8]]),
    /// A script's: those of the global `arg` table, as `LUA_INIT` and `-e` left it (lua.c of
    /// 5.3 on and LuaJIT; 5.1 and 5.2 pass the command line's, `Given`).
    ArgTable,
}

/// Loads `chunk` and calls it with `args`; with `print_results`, the results are passed to
/// `print` (lua.c's REPL). Runs on `lua`'s main thread, under mlua's lock.
pub fn run(lua: &Lua, chunk: Chunk, args: Args, print_results: bool) -> mlua::Result<Outcome> {
    // Text only: a file is read here and loaded as text (its first line skipped if it starts
    // with `#`, as `luaL_loadfile` does, the line count kept), the same way in every version.
    if TEXT_ONLY.load(Ordering::Relaxed)
        && let Chunk::File(path) = chunk
    {
        use std::io::Read;
        let mut source = Vec::new();
        let read = match path {
            Some(path) => std::fs::File::open(path).and_then(|mut file| file.read_to_end(&mut source)),
            None => std::io::stdin().read_to_end(&mut source),
        };
        let name = path.map_or_else(|| "=stdin".to_owned(), |path| format!("@{path}"));
        if read.is_err() {
            return Ok(Outcome::NotLoaded(format!("cannot open {}", &name[1..]).into_bytes()));
        }
        if source.first() == Some(&b'#') {
            let end = source.iter().position(|&b| b == b'\n').unwrap_or(source.len());
            source.drain(..end);
            // The newline keeps the line count of text; a binary chunk starts right after it.
            if source.get(1) == Some(&0x1b) {
                source.remove(0);
            }
        }
        return run(lua, Chunk::Code { source: &source, name: &name }, args, print_results);
    }
    let (code, name) = match chunk {
        Chunk::Code { source, name } => (Some(source), Some(CString::new(name).map_err(mlua::Error::external)?)),
        Chunk::File(path) => (None, path.map(CString::new).transpose().map_err(mlua::Error::external)?),
    };
    let name_ptr = name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
    let mut outcome = Outcome::Ran;
    // SAFETY: `exec_raw` runs the closure on the locked state inside a protected call of its
    // own (lua.c's `pmain`); the closure owns nothing that needs dropping (a Lua error raised
    // outside `lua_pcall` unwinds past it safely), every call that runs Lua code runs under
    // `lua_pcall`, and the stack is restored before returning.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            let top = ffi::lua_gettop(l);
            let mode = if TEXT_ONLY.load(Ordering::Relaxed) { c"t".as_ptr() } else { std::ptr::null() };
            let mut status = match code {
                Some(source) => ffi::luaL_loadbufferx(l, source.as_ptr().cast(), source.len(), name_ptr, mode),
                None => ffi::luaL_loadfile(l, name_ptr),
            };
            if status == ffi::LUA_OK {
                let count = match args {
                    Args::Given(args) => {
                        ffi::luaL_checkstack(l, args.len() as c_int + 3, c"too many arguments to script".as_ptr());
                        for arg in args {
                            ffi::lua_pushlstring(l, arg.as_ptr().cast(), arg.len());
                        }
                        args.len() as c_int
                    }
                    Args::ArgTable => push_arg_table(l),
                };
                let results = if print_results { ffi::LUA_MULTRET } else { 0 };
                status = docall(l, count, results);
                if status == ffi::LUA_OK && print_results {
                    status = print_values(l, top);
                }
            } else if status == ffi::LUA_ERRSYNTAX && is_incomplete(l) {
                outcome = Outcome::Incomplete(message(l));
            } else {
                outcome = Outcome::NotLoaded(message(l));
            }
            if status != ffi::LUA_OK && matches!(outcome, Outcome::Ran) {
                outcome = Outcome::Failed(error_message(l));
            }
            ffi::lua_settop(l, top);
        })?;
    }
    Ok(outcome)
}

/// Whether chunks must be text (`--profile sandbox`): a precompiled chunk is not checked by Lua
/// and can corrupt memory, so the sandbox refuses it for the script and stdin as `load` does.
static TEXT_ONLY: AtomicBool = AtomicBool::new(false);

/// From now on, chunks run by [`run`] must be text.
pub fn refuse_binary_chunks() {
    TEXT_ONLY.store(true, Ordering::Relaxed);
}

/// Opens the standard libraries as lua.c does, with `luaL_openlibs`: the same libraries, in the
/// same order, so the global table is laid out as the stock interpreter's (Lua 5.2's tracebacks
/// name functions by the first global path found in it).
pub fn open_libs(lua: &Lua) -> mlua::Result<()> {
    // SAFETY: `luaL_openlibs` runs inside `exec_raw`'s protected call; it leaves the stack as it
    // found it.
    unsafe { lua.exec_raw::<()>((), |l| ffi::luaL_openlibs(l)) }
}

/// lua.c's `dolibrary`: `global = require(module)` (without a global, only the call), under
/// the message handler.
pub fn require(lua: &Lua, module: &str, global: Option<&str>) -> mlua::Result<Outcome> {
    let module = CString::new(module).map_err(mlua::Error::external)?;
    let global = global.map(CString::new).transpose().map_err(mlua::Error::external)?;
    let mut outcome = Outcome::Ran;
    // SAFETY: as in `run`.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            let top = ffi::lua_gettop(l);
            ffi::lua_getglobal(l, c"require".as_ptr());
            ffi::lua_pushstring(l, module.as_ptr());
            if docall(l, 1, 1) == ffi::LUA_OK {
                if let Some(global) = &global {
                    ffi::lua_setglobal(l, global.as_ptr());
                }
            } else {
                outcome = Outcome::Failed(error_message(l));
            }
            ffi::lua_settop(l, top);
        })?;
    }
    Ok(outcome)
}

/// Pushes the script's arguments from the global `arg` table; returns how many. lua.c's
/// `pushargs` (5.3 on): `arg[1]` to `arg[#arg]`, and an error if `arg` is not a table;
/// luajit.c's: `arg[1]` up to the first `nil`, none if `arg` is not a table.
unsafe fn push_arg_table(l: *mut lua_State) -> c_int {
    // SAFETY: runs inside `exec_raw`'s protected call, as lua.c's `pushargs` runs inside
    // `pmain`: an error raised here is that call's failure.
    unsafe {
        let is_table = ffi::lua_getglobal(l, c"arg".as_ptr()) == ffi::LUA_TTABLE;
        if cfg!(feature = "luajit") {
            if !is_table {
                ffi::lua_pop(l, 1);
                return 0;
            }
            let mut n = 0;
            loop {
                ffi::luaL_checkstack(l, 3, c"too many arguments to script".as_ptr());
                ffi::lua_rawgeti(l, -(n + 1), (n + 1) as ffi::lua_Integer);
                if ffi::lua_type(l, -1) == ffi::LUA_TNIL {
                    ffi::lua_pop(l, 1);
                    break;
                }
                n += 1;
            }
            ffi::lua_remove(l, -(n + 1));
            return n;
        }
        if !is_table {
            ffi::luaL_error(l, c"'arg' is not a table".as_ptr());
        }
        let n = ffi::luaL_len(l, -1) as c_int;
        ffi::luaL_checkstack(l, n + 3, c"too many arguments to script".as_ptr());
        for i in 1..=n {
            ffi::lua_rawgeti(l, -i, i as ffi::lua_Integer);
        }
        ffi::lua_remove(l, -(n + 1));
        n
    }
}

/// lua.c's `incomplete`: a syntax error at the end of the chunk (`<eof>` in 5.4 and 5.5,
/// `'<eof>'` before).
unsafe fn is_incomplete(l: *mut lua_State) -> bool {
    // SAFETY: the error message is on top (a string: Lua's own syntax error).
    let message = unsafe { message_bytes(l) };
    message.ends_with(b"<eof>") || message.ends_with(b"'<eof>'")
}

/// The error object on top, as lua.c's `report` shows it: nothing for `nil` in 5.1, 5.2 and
/// LuaJIT (later versions' handler has made it a string).
unsafe fn error_message(l: *mut lua_State) -> Option<Vec<u8>> {
    // SAFETY: reading the top value.
    unsafe { (ffi::lua_type(l, -1) != ffi::LUA_TNIL).then(|| message(l)) }
}

/// The error object on top, as lua.c's `report` shows it.
unsafe fn message(l: *mut lua_State) -> Vec<u8> {
    // SAFETY: reading the top value; `lua_tolstring` converts numbers in place, which lua.c does
    // too (`lua_tostring`).
    unsafe {
        if ffi::lua_isstring(l, -1) == 0 {
            // 5.1, 5.2 and LuaJIT; later versions' handler always leaves a string.
            return b"(error object is not a string)".to_vec();
        }
        message_bytes(l).to_vec()
    }
}

unsafe fn message_bytes<'a>(l: *mut lua_State) -> &'a [u8] {
    // SAFETY: the value on top is a string or a number (checked by the callers or Lua).
    unsafe {
        let mut len = 0;
        let ptr = ffi::lua_tolstring(l, -1, &mut len);
        if ptr.is_null() { &[] } else { std::slice::from_raw_parts(ptr.cast(), len) }
    }
}

/// lua.c's `l_print`: passes the values above `base` to the global `print`.
unsafe fn print_values(l: *mut lua_State, base: c_int) -> c_int {
    // SAFETY: the values are on the stack above `base`; the call runs under `docall`.
    unsafe {
        let n = ffi::lua_gettop(l) - base;
        if n == 0 {
            return ffi::LUA_OK;
        }
        ffi::luaL_checkstack(l, ffi::LUA_MINSTACK, c"too many results to print".as_ptr());
        ffi::lua_getglobal(l, c"print".as_ptr());
        ffi::lua_insert(l, base + 1);
        let status = ffi::lua_pcall(l, n, 0, 0);
        if status != ffi::LUA_OK {
            let text = format!("error calling 'print' ({})", String::from_utf8_lossy(message_bytes(l)));
            ffi::lua_settop(l, base);
            let text = CString::new(text).unwrap_or_default();
            ffi::lua_pushstring(l, text.as_ptr());
        }
        status
    }
}

/// lua.c's `docall`: calls the function below its `narg` arguments under the message handler,
/// with SIGINT stopping it.
unsafe fn docall(l: *mut lua_State, narg: c_int, nres: c_int) -> c_int {
    // SAFETY: per lua.c; the handler is a C function pushed without allocating (5.2+) or, in
    // 5.1 and LuaJIT, a closure whose allocation failure raises into `exec_raw`'s protection.
    unsafe {
        let base = ffi::lua_gettop(l) - narg;
        ffi::lua_pushcfunction(l, msghandler);
        ffi::lua_insert(l, base);
        let previous = INTERRUPTED.swap(l, Ordering::SeqCst);
        let old = set_sigint(laction as *const () as usize);
        let status = ffi::lua_pcall(l, narg, nres, base);
        // A traceback that failed even inside the reserve raised past its `close`.
        crate::last_words::close();
        set_sigint(old);
        INTERRUPTED.store(previous, Ordering::SeqCst);
        ffi::lua_remove(l, base);
        status
    }
}

/// lua.c's `traceback` of Lua 5.2: a traceback after a string message; another error object
/// (not `nil`) is shown through its `__tostring`, else as `(no error message)`, without a
/// traceback.
#[cfg(feature = "lua52")]
unsafe extern "C-unwind" fn msghandler(l: *mut lua_State) -> c_int {
    // SAFETY: a message handler: argument 1 is the error object; as lua.c 5.2.
    unsafe {
        if ffi::lua_isstring(l, 1) != 0 {
            crate::last_words::open();
            ffi::luaL_traceback(l, l, ffi::lua_tolstring(l, 1, std::ptr::null_mut()), 1);
            crate::last_words::close();
        } else if ffi::lua_type(l, 1) > ffi::LUA_TNIL && ffi::luaL_callmeta(l, 1, c"__tostring".as_ptr()) == 0 {
            ffi::lua_pushstring(l, c"(no error message)".as_ptr());
        }
    }
    1
}

/// lua.c's `msghandler` (5.3 and later): a traceback after a string message; a non-string
/// error object is shown through its `__tostring`, without a traceback, or as
/// `(error object is a T value)`.
#[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
unsafe extern "C-unwind" fn msghandler(l: *mut lua_State) -> c_int {
    // SAFETY: a message handler: argument 1 is the error object.
    unsafe {
        let is_string = ffi::lua_isstring(l, 1) != 0;
        if !is_string
            && ffi::luaL_callmeta(l, 1, c"__tostring".as_ptr()) != 0
            && ffi::lua_type(l, -1) == ffi::LUA_TSTRING
        {
            return 1;
        }
        // The traceback is the runner's, built inside the reserve (no script code runs there).
        crate::last_words::open();
        let message = if is_string {
            ffi::lua_tolstring(l, 1, std::ptr::null_mut())
        } else {
            let kind = ffi::lua_typename(l, ffi::lua_type(l, 1));
            ffi::lua_pushfstring(l, c"(error object is a %s value)".as_ptr(), kind)
        };
        ffi::luaL_traceback(l, l, message, 1);
        crate::last_words::close();
    }
    1
}

/// luajit.c's `traceback`: a non-string error object is replaced by its `__tostring`, or else
/// left as it is, to be reported as `(error object is not a string)`; a string gets the
/// traceback.
#[cfg(feature = "luajit")]
unsafe extern "C-unwind" fn msghandler(l: *mut lua_State) -> c_int {
    // SAFETY: a message handler: argument 1 is the error object.
    unsafe {
        if ffi::lua_isstring(l, 1) == 0 {
            if ffi::lua_type(l, 1) <= ffi::LUA_TNIL
                || ffi::luaL_callmeta(l, 1, c"__tostring".as_ptr()) == 0
                || ffi::lua_isstring(l, -1) == 0
            {
                return 1;
            }
            ffi::lua_remove(l, 1);
        }
        crate::last_words::open();
        luajit::luaL_traceback(l, l, ffi::lua_tolstring(l, 1, std::ptr::null_mut()), 1);
        crate::last_words::close();
    }
    1
}

/// LuaJIT's own `luaL_traceback` (mlua's bindings substitute a Rust one written for Lua 5.1,
/// which reads unnamed C functions as `in ?` where luajit says `at 0x...`).
#[cfg(feature = "luajit")]
mod luajit {
    use std::ffi::{c_char, c_int};

    use super::lua_State;

    unsafe extern "C-unwind" {
        pub fn luaL_traceback(l: *mut lua_State, l1: *mut lua_State, msg: *const c_char, level: c_int);
    }
}

/// lua.c's `traceback` of Lua 5.1: a non-string error object is left as it is (reported as
/// `(error object is not a string)`); a string goes through `debug.traceback` if the script
/// left one.
#[cfg(feature = "lua51")]
unsafe extern "C-unwind" fn msghandler(l: *mut lua_State) -> c_int {
    // SAFETY: a message handler: argument 1 is the error object; as lua.c 5.1.
    unsafe {
        if ffi::lua_isstring(l, 1) == 0 {
            return 1;
        }
        // Inside the reserve: a script's own `debug.traceback` may run there too, bounded by
        // the reserve like the rest.
        crate::last_words::open();
        ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"debug".as_ptr());
        if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
            ffi::lua_settop(l, 1);
            crate::last_words::close();
            return 1;
        }
        ffi::lua_getfield(l, -1, c"traceback".as_ptr());
        if ffi::lua_type(l, -1) != ffi::LUA_TFUNCTION {
            ffi::lua_settop(l, 1);
            crate::last_words::close();
            return 1;
        }
        ffi::lua_pushvalue(l, 1);
        ffi::lua_pushinteger(l, 2);
        ffi::lua_call(l, 2, 1);
        crate::last_words::close();
    }
    1
}

/// The state running a chunk now, for the SIGINT handler (lua.c's `globalL`).
static INTERRUPTED: AtomicPtr<lua_State> = AtomicPtr::new(std::ptr::null_mut());

/// lua.c's `lstop`: the hook that turns a SIGINT into an error.
unsafe extern "C-unwind" fn lstop(l: *mut lua_State, _ar: *mut ffi::lua_Debug) {
    // SAFETY: a hook, called by Lua on the running state; the error unwinds to `docall`'s pcall.
    unsafe {
        ffi::lua_sethook(l, None, 0, 0);
        // luajit.c: a C hook adds no frame in LuaJIT, so the position is that of level 0.
        if cfg!(feature = "luajit") {
            ffi::luaL_where(l, 0);
            ffi::lua_pushfstring(l, c"%sinterrupted!".as_ptr(), ffi::lua_tolstring(l, -1, std::ptr::null_mut()));
            ffi::lua_error(l);
        }
        ffi::luaL_error(l, c"interrupted!".as_ptr());
    }
}

/// lua.c's `laction`: on SIGINT, sets a hook that stops the running code at its next step; a
/// second SIGINT terminates the process (the default action is back).
extern "C" fn laction(signal: c_int) {
    // The events lua.c of the version stops at (line events from 5.4 on).
    let line = if cfg!(any(feature = "lua54", feature = "lua55")) { ffi::LUA_MASKLINE } else { 0 };
    let mask = ffi::LUA_MASKCALL | ffi::LUA_MASKRET | line | ffi::LUA_MASKCOUNT;
    // SAFETY: `signal` and `lua_sethook` only store values (lua_sethook is what lua.c calls from
    // its handler); the state is the one running `docall`.
    unsafe {
        set_sigint_raw(signal, libc::SIG_DFL);
        let l = INTERRUPTED.load(Ordering::SeqCst);
        if !l.is_null() {
            ffi::lua_sethook(l, Some(lstop), mask, 1);
        }
    }
}

/// Installs `handler` for SIGINT; returns the previous one.
fn set_sigint(handler: usize) -> usize {
    // SAFETY: installing a handler that only stores values (see `laction`).
    unsafe { set_sigint_raw(libc::SIGINT, handler) }
}

unsafe fn set_sigint_raw(signal: c_int, handler: usize) -> usize {
    // SAFETY: a plain `sigaction` with an empty mask.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, &mut old);
        old.sa_sigaction
    }
}

/// The version line of the embedded Lua's headers (`LUA_COPYRIGHT`), where the build compiled
/// it (build.rs).
pub fn version_line() -> Option<&'static std::ffi::CStr> {
    #[cfg(lua_version_line)]
    {
        unsafe extern "C" {
            static lua_system_version_line: [std::ffi::c_char; 0];
        }
        // SAFETY: a NUL-terminated constant array compiled from c/version.c, never written.
        Some(unsafe { std::ffi::CStr::from_ptr(lua_system_version_line.as_ptr()) })
    }
    #[cfg(not(lua_version_line))]
    None
}

/// The runner's state with the module's allocator from its first byte, as `lua_newstate` makes
/// it (libraries are opened later, as lua.c opens them).
pub fn accounted_state() -> mlua::Result<SystemLua> {
    // SAFETY: the runner never clones the `Lua` out of the state, and opens every library, C
    // modules included, as lua.c does.
    unsafe { SystemLua::unsafe_new_with(StdLib::NONE) }
}

/// The runner's state without the module's accounting (`--state plain`), as `lua_newstate`
/// makes it.
pub fn plain_state() -> Lua {
    // SAFETY: as lua.c, the runner opens every library, C modules included.
    unsafe { Lua::unsafe_new_with(StdLib::NONE, mlua::LuaOptions::default()) }
}

/// Installs lauxlib's warning functions (`warnings.rs`); the returned handle turns warnings on
/// (`-W`). Lua versions before 5.4 have no warnings: the handle then does nothing.
pub fn install_warnings(lua: &Lua) -> std::rc::Rc<Warnings> {
    let warnings = std::rc::Rc::new(Warnings::default());
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    set_warning_function(lua, std::rc::Rc::clone(&warnings));
    #[cfg(not(any(feature = "lua54", feature = "lua55")))]
    let _ = lua;
    warnings
}

/// Makes `warnings` the state's warning function, called by Lua with each piece as a C string:
/// a piece is measured only when it is shown or may be a control message.
#[cfg(any(feature = "lua54", feature = "lua55"))]
fn set_warning_function(lua: &Lua, warnings: std::rc::Rc<Warnings>) {
    use std::ffi::{CStr, c_char, c_void};

    unsafe extern "C-unwind" fn warnf(ud: *mut c_void, msg: *const c_char, tocont: c_int) {
        // SAFETY: `ud` is the `Warnings` leaked below, alive for the process; `msg` is a C
        // string (Lua's contract), so its first byte is readable. No panic leaves: writing to
        // stderr ignores errors, and a panic is caught.
        let _ = std::panic::catch_unwind(|| unsafe {
            let warnings = &*(ud as *const Warnings);
            if !warnings.ignores(*msg.cast::<u8>(), tocont != 0) {
                warnings.warn(CStr::from_ptr(msg).to_bytes(), tocont != 0);
            }
        });
    }

    // Lua calls the function until the state is closed, which may be after the runner's own
    // handle is dropped: the thread (the runner's main thread) keeps one until it exits.
    thread_local! {
        static KEPT: std::cell::RefCell<Vec<std::rc::Rc<Warnings>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let ud = std::rc::Rc::as_ptr(&warnings) as *mut c_void;
    KEPT.with(|kept| kept.borrow_mut().push(warnings));
    // SAFETY: `lua_setwarnf` only stores the function and its data; it runs under `exec_raw`'s
    // protected call.
    let _ = unsafe { lua.exec_raw::<()>((), |l| ffi::lua_setwarnf(l, Some(warnf), ud)) };
}
