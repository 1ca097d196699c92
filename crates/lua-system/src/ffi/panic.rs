//! What happens on a Lua error outside any protected call: Lua calls the panic function, then
//! aborts the process. The module's states report the error first, as `luaL_newstate`'s do.

use std::ffi::c_int;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

use mlua::ffi::{self, lua_State};

/// The panic function of the states the module creates: writes the error to stderr. Lua aborts
/// the process when it returns.
pub(crate) unsafe extern "C-unwind" fn report(l: *mut lua_State) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the error object is on top of the stack; a string is read without converting.
        let message = unsafe {
            if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                let mut len = 0;
                let ptr = ffi::lua_tolstring(l, -1, &mut len);
                String::from_utf8_lossy(std::slice::from_raw_parts(ptr.cast::<u8>(), len)).into_owned()
            } else {
                "error object is not a string".to_owned()
            }
        };
        let _ = writeln!(std::io::stderr(), "PANIC: unprotected error in call to Lua API ({message})");
    }));
    0
}
