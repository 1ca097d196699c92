//! Functions that stand in for another, with Rust code around the call: `collectgarbage` under
//! the module's permissions, marking its collections forced; `os.exit` with a host's last step
//! before it (the runner writes its outputs there).
//!
//! Each is a C closure of [`stand_in`] with two upvalues, both checked on every call: 1, its
//! index among the stand-ins ([`StandIns`]: an integer); 2, the function it stands in for (a
//! function). What it needs of the state is found through the state's allocator, as module
//! functions find it (`call.rs`), so no upvalue holds a pointer. A script with `debug` may
//! replace either upvalue: a value that is not an index or not a function is refused with a Lua
//! error; another index makes it another stand-in, which is as harmless as calling that one.
//! `debug` also reaches the function stood in for (upvalue 2), as it reaches the registry and
//! every upvalue: a stand-in binds scripts without `debug` (the sandbox has none).
//!
//! The function stood in for is called under `lua_pcall`, so the Rust step after it runs even
//! when it raises; its error is then raised again, an argument error reworded as if the script
//! had called it directly (Lua names a function called from C `?`, without a position).

use std::ffi::{CStr, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use mlua::ffi::{self, lua_State};

use super::call::Call;
use super::{Record, protected, states};
use crate::text::Text;

/// The stand-ins a layer above defines, by index (implemented in `host/stand_ins.rs`).
pub(crate) trait StandIns: 'static {
    type Record: Record;
    /// What [`StandIns::before`] hands to [`StandIns::after`].
    type Token: Copy;
    /// How many stand-ins there are: upvalue 1 is below it.
    const COUNT: usize;

    /// What scripts call stand-in `index` (for messages).
    fn name(index: usize) -> &'static CStr;

    /// Runs before the call, with the script's arguments: `Err(message)` answers `nil, message`
    /// and the function stood in for is not called.
    fn before(call: &Call<'_, Self::Record>, index: usize) -> Result<Self::Token, Text>;

    /// Runs after the function stood in for returned or raised (the stack then holds its
    /// results, not the arguments).
    fn after(call: &Call<'_, Self::Record>, index: usize, token: Self::Token);
}

/// The C function behind every stand-in.
unsafe extern "C-unwind" fn stand_in<S: StandIns>(l: *mut lua_State) -> c_int {
    // SAFETY: reading upvalues and the allocator neither allocates nor raises. Every path that
    // raises below leaves through frames holding only `Copy` data (the record is a reference).
    unsafe {
        let mut is_integer = 0;
        let index = ffi::lua_tointegerx(l, ffi::lua_upvalueindex(1), &mut is_integer);
        let index = usize::try_from(index).ok().filter(|&index| is_integer != 0 && index < S::COUNT);
        let Some(index) = index else {
            refuse(l, c"lua-system: a stand-in's upvalue 1 was changed: it is not a stand-in's number");
        };
        if ffi::lua_type(l, ffi::lua_upvalueindex(2)) != ffi::LUA_TFUNCTION {
            refuse(l, c"lua-system: a stand-in's upvalue 2 was changed: it is not a function");
        }
        let Some(record) = states::record::<S::Record>(l) else {
            refuse(l, c"lua-system: the module's record of this state is gone (the state is closing)");
        };
        let call = Call::new(l, record);
        let before = catch_unwind(AssertUnwindSafe(|| S::before(&call, index)));
        let token = match before {
            Ok(Ok(token)) => token,
            Ok(Err(message)) => return answer(l, &message),
            Err(panic) => {
                drop(panic);
                let name = S::name(index).to_string_lossy();
                let message = Text::format(format_args!("{name}: internal error (a panic was caught)"));
                return answer(l, &message);
            }
        };
        let arguments = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
        ffi::lua_insert(l, 1);
        let status = ffi::lua_pcall(l, arguments, ffi::LUA_MULTRET, 0);
        let _ = catch_unwind(AssertUnwindSafe(|| S::after(&call, index, token)));
        if status != ffi::LUA_OK {
            raise_as_caller(l);
        }
        ffi::lua_gettop(l)
    }
}

/// Answers `nil, message` (pushing the message may raise a memory error: this frame and the
/// caller's hold only `Copy` data).
///
/// # Safety
/// `l` runs a C function, with two free slots.
unsafe fn answer(l: *mut lua_State, message: &Text) -> c_int {
    let bytes = message.as_bytes();
    // SAFETY: per the contract; Lua copies the bytes.
    unsafe {
        ffi::lua_pushnil(l);
        ffi::lua_pushlstring(l, bytes.as_ptr().cast(), bytes.len());
    }
    2
}

/// Raises `message`: a stand-in that cannot do its job does not return quietly (an `os.exit`
/// that returned would let the script go on).
///
/// # Safety
/// `l` runs a C function.
unsafe fn refuse(l: *mut lua_State, message: &CStr) -> ! {
    // SAFETY: per the contract; raising leaves through frames holding only `Copy` data.
    unsafe {
        ffi::lua_pushstring(l, message.as_ptr());
        ffi::lua_error(l)
    }
}

/// Raises the error object on top again. Lua names a C function called from C `?` and gives no
/// position: an argument error of the function stood in for (`bad argument #1 to '?' (...)`)
/// is raised again by `luaL_argerror` from here, so it names the stand-in as the script called
/// it, with the script's position, as the stock function's own error would.
///
/// # Safety
/// `l` runs a C function, with the error object on top and a free slot.
unsafe fn raise_as_caller(l: *mut lua_State) -> ! {
    // SAFETY: a string error object is read without conversion; the reason pushed stays on the
    // stack (so its bytes live) until `luaL_argerror` raises.
    unsafe {
        if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
            let mut len = 0;
            let bytes = ffi::lua_tolstring(l, -1, &mut len);
            let message = std::slice::from_raw_parts(bytes.cast::<u8>(), len);
            if let Some((argument, reason)) = argument_error(message) {
                ffi::lua_pushlstring(l, reason.as_ptr().cast(), reason.len());
                ffi::luaL_argerror(l, argument, ffi::lua_tolstring(l, -1, std::ptr::null_mut()));
            }
        }
        ffi::lua_error(l)
    }
}

/// The argument and the reason of an argument error raised by a C function called from C:
/// `bad argument #2 to '?' (number expected, got string)`.
fn argument_error(message: &[u8]) -> Option<(c_int, &[u8])> {
    let rest = message.strip_prefix(b"bad argument #")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let argument = std::str::from_utf8(&rest[..digits]).ok()?.parse::<c_int>().ok()?;
    let reason = rest[digits..].strip_prefix(b" to '?' (")?.strip_suffix(b")")?;
    Some((argument, reason))
}

/// Where a stand-in goes, and what [`put`] found: the armed data of the protected call.
struct Put {
    /// The global table holding the function (`os`), or `None` for a global.
    table: Option<&'static CStr>,
    name: &'static CStr,
    index: usize,
    /// What happened: the field held no function (`None`), or the stand-in is there (whether
    /// it was put there now).
    outcome: Option<bool>,
}

/// Puts stand-in `index` in front of the function at `table.name` (a global table's field, or
/// a global), once: a field that already holds that stand-in is left as it is. Fields are read
/// and set raw. `Ok(None)`: the field holds no function (a sandbox's `os.exit`), nothing done;
/// `Ok(Some(put_now))` otherwise.
pub(crate) fn install<S: StandIns>(
    lua: &mlua::Lua,
    table: Option<&'static CStr>,
    name: &'static CStr,
    index: usize,
) -> mlua::Result<Option<bool>> {
    let mut put = Put { table, name, index, outcome: None };
    // SAFETY: on the locked state, under a protected call; `put` allocates and may raise only
    // inside its own protected call, whose error object is read as text and popped here.
    let failed = unsafe {
        states::with_raw_state(lua, |l| {
            if protected::call(l, put_raw::<S>, &mut put as *mut Put).is_ok() {
                return None;
            }
            let message = if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                let mut len = 0;
                let bytes = ffi::lua_tolstring(l, -1, &mut len);
                String::from_utf8_lossy(std::slice::from_raw_parts(bytes.cast::<u8>(), len)).into_owned()
            } else {
                "(error object is not a string)".to_owned()
            };
            ffi::lua_settop(l, -2);
            Some(message)
        })?
    };
    match failed {
        Some(message) => Err(mlua::Error::runtime(format!("lua-system: cannot put the stand-in in place: {message}"))),
        None => Ok(put.outcome),
    }
}

/// [`install`]'s Lua side, run protected with the armed [`Put`].
unsafe extern "C-unwind" fn put_raw<S: StandIns>(l: *mut lua_State) -> c_int {
    // SAFETY: only for the armed call; allocates (the closure, the field's key) under its
    // protection; tables are read and set raw, so no metamethod runs.
    unsafe {
        let Some(put) = protected::armed::<Put>(l) else {
            return protected::NO_RESULTS;
        };
        let put = &mut *put;
        ffi::lua_settop(l, 0);
        ffi::lua_pushglobaltable(l);
        if let Some(table) = put.table {
            ffi::lua_pushstring(l, table.as_ptr());
            ffi::lua_rawget(l, 1);
            ffi::lua_replace(l, 1);
        }
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            return protected::NO_RESULTS;
        }
        ffi::lua_pushstring(l, put.name.as_ptr());
        ffi::lua_pushvalue(l, 2);
        ffi::lua_rawget(l, 1);
        if ffi::lua_type(l, 3) != ffi::LUA_TFUNCTION {
            return protected::NO_RESULTS;
        }
        if is_stand_in::<S>(l, 3, put.index) {
            put.outcome = Some(false);
            return protected::NO_RESULTS;
        }
        ffi::lua_pushinteger(l, put.index as ffi::lua_Integer);
        ffi::lua_insert(l, 3);
        ffi::lua_pushcclosure(l, stand_in::<S>, 2);
        ffi::lua_rawset(l, 1);
        put.outcome = Some(true);
    }
    protected::NO_RESULTS
}

/// Whether the function at `index` is stand-in `which` of `S`.
///
/// # Safety
/// `l` is running with a free slot; `index` is absolute.
unsafe fn is_stand_in<S: StandIns>(l: *mut lua_State, index: c_int, which: usize) -> bool {
    // SAFETY: reading a function and its upvalue neither allocates nor raises.
    unsafe {
        if ffi::lua_tocfunction(l, index).is_none_or(|f| f as usize != stand_in::<S> as ffi::lua_CFunction as usize) {
            return false;
        }
        if ffi::lua_getupvalue(l, index, 1).is_null() {
            return false;
        }
        let mut is_integer = 0;
        let number = ffi::lua_tointegerx(l, -1, &mut is_integer);
        ffi::lua_settop(l, -2);
        is_integer != 0 && number == which as ffi::lua_Integer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_errors_of_a_function_called_from_c_are_recognised() {
        assert_eq!(
            argument_error(b"bad argument #1 to '?' (invalid option 'bogus')"),
            Some((1, b"invalid option 'bogus'".as_slice()))
        );
        assert_eq!(argument_error(b"bad argument #12 to '?' (x (y))"), Some((12, b"x (y)".as_slice())));
        assert_eq!(argument_error(b"bad argument #1 to 'f' (x)"), None, "named: raised as it is");
        assert_eq!(argument_error(b"x.lua:1: bad argument #1 to '?' (x)"), None);
        assert_eq!(argument_error(b"bad argument # to '?' (x)"), None);
    }
}
