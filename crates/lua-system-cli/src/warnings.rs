//! Lua 5.4 warnings as lua.c shows them (`lua_c.rs` installs them): the warning function of Lua's lauxlib (`warnfoff`,
//! `warnfon`, `warnfcont`), which `luaL_newstate` installs and the runner's state (made by the
//! module, with its own allocator) lacks. Off until `-W` or `warn("@on")`; a message is
//! written to stderr as its pieces arrive, after "Lua warning: ", ended by a newline.
//!
//! Control messages (`@on`, `@off`, any other `@...` ignored) are single-piece messages: a piece
//! that does not continue, received while no message is under way.

use std::cell::Cell;
use std::io::Write;

/// Which of lauxlib's three warning functions is current.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "lua54", feature = "lua55")), allow(dead_code))]
enum State {
    /// `warnfoff`: warnings are off; only control messages matter.
    #[default]
    Off,
    /// `warnfon`: on, between messages.
    On,
    /// `warnfcont`: on, in a message whose next piece is awaited.
    Continuing,
}

#[derive(Default)]
pub struct Warnings {
    state: Cell<State>,
}

impl Warnings {
    pub fn turn_on(&self) {
        if self.state.get() == State::Off {
            self.state.set(State::On);
        }
    }

    /// Whether a piece starting with `first` is ignored without being read: warnings are off and
    /// it is no control message (lauxlib's `warnfoff` costs nothing then either, and a script
    /// may pass gigabytes to `warn`).
    #[cfg_attr(not(any(feature = "lua54", feature = "lua55")), allow(dead_code))]
    pub fn ignores(&self, first: u8, continued: bool) -> bool {
        self.state.get() == State::Off && (continued || first != b'@')
    }

    #[cfg_attr(not(any(feature = "lua54", feature = "lua55")), allow(dead_code))]
    pub fn warn(&self, piece: &[u8], continued: bool) {
        let mut stderr = std::io::stderr().lock();
        match self.state.get() {
            State::Off | State::On if self.is_control(piece, continued) => {}
            State::Off => {}
            State::On => {
                let _ = stderr.write_all(b"Lua warning: ");
                self.write_piece(&mut stderr, piece, continued);
            }
            State::Continuing => self.write_piece(&mut stderr, piece, continued),
        }
    }

    /// lauxlib's `checkcontrol`: acts on a control message; whether `piece` was one.
    fn is_control(&self, piece: &[u8], continued: bool) -> bool {
        if continued || piece.first() != Some(&b'@') {
            return false;
        }
        match piece {
            b"@off" => self.state.set(State::Off),
            b"@on" => self.state.set(State::On),
            _ => {}
        }
        true
    }

    /// lauxlib's `warnfcont`.
    fn write_piece(&self, stderr: &mut impl Write, piece: &[u8], continued: bool) {
        let _ = stderr.write_all(piece);
        if continued {
            self.state.set(State::Continuing);
        } else {
            let _ = stderr.write_all(b"\n");
            self.state.set(State::On);
        }
    }
}
