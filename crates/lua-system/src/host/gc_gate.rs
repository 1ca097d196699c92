//! `collectgarbage` under the module's permissions: where a state's permissions deny `gc` or
//! `set_gc_percent`, Lua's own way to the collector is denied the same changes
//! ([`set_permissions`](crate::set_permissions) puts the gate in place).

use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Value};

use crate::ffi::states;
use crate::functions::permissions::Permissions;
use crate::state::StateRecord;

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

const GATED_KEY: &str = "lua-system: collectgarbage gated";

/// Puts `collectgarbage` under the module's permissions, once: reading options stay allowed; a
/// collection (`collect`, `step`) needs `gc`, every setting (`stop`, `restart`, `setpause`,
/// `incremental`, `generational`, `param` with a value, ...) needs `set_gc_percent`. A denied
/// call answers `nil, "permission denied: collectgarbage(\"stop\")"` and changes nothing.
/// Called whenever permissions deny either change; states whose scripts may do everything keep
/// Lua's own function.
pub(crate) fn gate_collectgarbage(lua: &Lua) -> mlua::Result<()> {
    if lua.named_registry_value::<bool>(GATED_KEY).unwrap_or(false) {
        return Ok(());
    }
    let Value::Function(original) = lua.globals().raw_get::<Value>("collectgarbage")? else { return Ok(()) };
    let gate = lua.create_function(move |lua, args: MultiValue| gated_call(lua, &original, args))?;
    lua.globals().raw_set("collectgarbage", gate)?;
    lua.set_named_registry_value(GATED_KEY, true)
}

fn gated_call(lua: &Lua, original: &Function, args: MultiValue) -> mlua::Result<MultiValue> {
    let option = match args.front() {
        None | Some(Value::Nil) => b"collect".to_vec(),
        // Lua compares options as C strings: up to the first NUL ("stop\0" is "stop").
        Some(Value::String(s)) => s.as_bytes().split(|&b| b == 0).next().unwrap_or_default().to_vec(),
        // Lua reports the bad option itself.
        Some(_) => return original.call(args),
    };
    if let Some(function) = collectgarbage_needs(&option, args.len())
        && !states::with_record(lua, |record: &StateRecord, _| Permissions::from_bits(record.permission_bits()))?
            .allows_change(function)
    {
        let message = format!("permission denied: collectgarbage(\"{}\")", String::from_utf8_lossy(&option));
        return (Value::Nil, message).into_lua_multi(lua);
    }
    original.call(args)
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
        }
        assert_eq!(collectgarbage_needs(b"bogus", 1), None, "Lua's own error");
    }
}
