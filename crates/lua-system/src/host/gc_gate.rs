//! What the module's stand-in for `collectgarbage` (`stand_ins.rs`) does around the call: under
//! the module's permissions where they deny `gc` or `set_gc_percent`
//! ([`set_permissions`](crate::set_permissions) puts it in place), and watched where a host asks
//! ([`track_collectgarbage`](crate::track_collectgarbage)): its collections are reported forced,
//! and a change of the collector's setting is read at once.

use crate::ffi::call::{Arg, Call};
use crate::functions::permissions::Permissions;
use crate::state::StateRecord;
use crate::text::Text;

/// What `collectgarbage(option)` does, as the module's permissions see it: the function whose
/// change it amounts to, or `None` for reading.
fn collectgarbage_needs(option: &[u8], argument_count: usize) -> Option<&'static str> {
    match option {
        b"count" | b"isrunning" => None,
        // Lua 5.5 reads a parameter when no value is given.
        b"param" if argument_count < 3 => None,
        b"collect" | b"step" => Some("gc"),
        b"stop" | b"restart" | b"setpause" | b"setstepmul" | b"incremental" | b"generational" | b"param" => {
            Some("set_gc_percent")
        }
        // Not an option of any version: Lua reports it.
        _ => None,
    }
}

/// Whether `option` leaves the collector's setting as it was.
fn keeps_setting(option: &[u8], argument_count: usize) -> bool {
    matches!(option, b"count" | b"step" | b"isrunning" | b"collect") || (option == b"param" && argument_count < 3)
}

/// What [`before`] hands to [`after`].
#[derive(Clone, Copy, Default)]
pub(crate) struct Token {
    /// A collection marked forced.
    forced: bool,
    /// The collector's setting to read again.
    refresh: bool,
}

/// Before a call: the option (a missing or nil one is `"collect"`), refused if the state's
/// permissions deny what it does; a collection is marked forced.
pub(super) fn before(call: &Call<'_, StateRecord>) -> Result<Token, Text> {
    let option = match call.arg(1) {
        Arg::Absent | Arg::Nil => b"collect".as_slice(),
        // Lua compares options as C strings: up to the first NUL ("stop\0" is "stop").
        _ if let Some(option) = call.string(1) => option.split(|&b| b == 0).next().unwrap_or_default(),
        // Lua reports a bad option itself.
        _ => return Ok(Token::default()),
    };
    let count = usize::try_from(call.count()).unwrap_or(0);
    let record = call.record();
    if let Some(function) = collectgarbage_needs(option, count)
        && !Permissions::from_bits(record.permission_bits()).allows_change(function)
    {
        let option = String::from_utf8_lossy(option);
        return Err(Text::format(format_args!("permission denied: collectgarbage(\"{option}\")")));
    }
    let forced = option == b"collect";
    if forced {
        record.cycles().mark_forced(true);
    }
    Ok(Token { forced, refresh: !keeps_setting(option, count) })
}

/// After a call: the forced collection is over; a changed setting is read.
pub(super) fn after(call: &Call<'_, StateRecord>, token: Token) {
    let record = call.record();
    if token.forced {
        record.cycles().mark_forced(false);
    }
    if token.refresh {
        // Busy (a finalizer changed it mid-cycle): the next read through the module sees it.
        let _ = record.cycles().refresh_setting(&call.collector(), record.heap().live_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_options_need_nothing_and_the_rest_need_a_change() {
        assert_eq!(collectgarbage_needs(b"count", 1), None);
        assert_eq!(collectgarbage_needs(b"isrunning", 1), None);
        assert_eq!(collectgarbage_needs(b"param", 2), None);
        assert_eq!(collectgarbage_needs(b"param", 3), Some("set_gc_percent"));
        assert_eq!(collectgarbage_needs(b"collect", 1), Some("gc"));
        assert_eq!(collectgarbage_needs(b"step", 2), Some("gc"));
        for option in ["stop", "restart", "setpause", "setstepmul", "incremental", "generational"] {
            assert_eq!(collectgarbage_needs(option.as_bytes(), 1), Some("set_gc_percent"), "{option}");
            assert!(!keeps_setting(option.as_bytes(), 1), "{option}");
        }
        assert_eq!(collectgarbage_needs(b"bogus", 1), None, "Lua's own error");
        for option in ["count", "step", "isrunning", "collect"] {
            assert!(keeps_setting(option.as_bytes(), 1), "{option}");
        }
    }
}
