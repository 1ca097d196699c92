//! Lua 5.4 warnings as lua.c shows them: off until `-W` or `warn("@on")`, each message on
//! stderr prefixed by "Lua warning: ", pieces of a continued message joined.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;

use lua_system::mlua::Lua;

#[derive(Default)]
#[cfg_attr(not(any(feature = "lua54", feature = "lua55")), allow(dead_code))]
pub struct Warnings {
    on: Cell<bool>,
    pending: RefCell<String>,
}

impl Warnings {
    pub fn turn_on(&self) {
        self.on.set(true);
    }

    #[cfg_attr(not(any(feature = "lua54", feature = "lua55")), allow(dead_code))]
    fn warn(&self, piece: &str, continued: bool) {
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() && !continued {
            // A single-piece message may be a control message.
            match piece {
                "@on" => return self.on.set(true),
                "@off" => return self.on.set(false),
                _ if piece.starts_with('@') => return,
                _ => {}
            }
        }
        pending.push_str(piece);
        if !continued {
            if self.on.get() {
                let _ = writeln!(std::io::stderr(), "Lua warning: {pending}");
            }
            pending.clear();
        }
    }
}

/// Installs the warning function; the returned handle turns warnings on (`-W`). Lua versions
/// before 5.4 have no warnings: the handle then does nothing.
pub fn install(lua: &Lua) -> Rc<Warnings> {
    let warnings = Rc::new(Warnings::default());
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    {
        let state = Rc::clone(&warnings);
        lua.set_warning_function(move |_, piece, continued| {
            state.warn(piece, continued);
            Ok(())
        });
    }
    #[cfg(not(any(feature = "lua54", feature = "lua55")))]
    let _ = lua;
    warnings
}
