//! Calls every function of the module (walked from the module table) under every permission
//! profile, with argument lists decoded from the input (any types and values: nil, booleans,
//! extreme integers, NaN, infinities, fractions, long strings, tables, functions), and checks
//! after each call:
//!
//! * the return convention: exactly two values, `value, nil` or `nil, message`;
//! * that settings (GC percent, CPU limit, memory limit) change only through a successful call
//!   of their setter: a failed or denied call changes nothing.
//!
//!   cargo fuzz run calls --sanitizer none
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use lua_system::{Permissions, Profile, SystemLua};
use lua_system::mlua::{Function, MultiValue, Table, Value};

struct Fixture {
    lua: SystemLua,
    system: Table,
    /// The module's functions, by name: walked from the module table, so every function is
    /// fuzzed, the ones added later included.
    names: Vec<String>,
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new({
        let lua = SystemLua::new().unwrap();
        let system: Table = lua.load("return require('system')").eval().unwrap();
        let mut names: Vec<String> = system.pairs::<String, Value>().map(|pair| pair.unwrap().0).collect();
        names.sort();
        Fixture { lua, system, names }
    });
}

/// Reads the input a byte or a few at a time; past the end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        first
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| (v << 8) | u64::from(self.byte()))
    }
}

fn argument(lua: &SystemLua, input: &mut Input<'_>) -> Value {
    match input.byte() % 12 {
        0 => Value::Nil,
        1 => Value::Boolean(input.byte() % 2 == 0),
        2 => Value::Integer(input.u64() as i64),
        3 => Value::Integer([0, 1, -1, 2, 100, 920, 921, 1024, 1025, i64::MAX, i64::MIN][input.byte() as usize % 11]),
        4 => Value::Number(f64::from_bits(input.u64())),
        5 => Value::Number([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5, -0.5, 1e300, -1e300, 0.0, -0.0, 2e9]
            [input.byte() as usize % 10]),
        6 => Value::Integer(i64::from(input.byte() as i8)),
        7 => {
            let len = input.byte() as usize * 64;
            Value::String(lua.create_string("7".repeat(len)).unwrap())
        }
        8 => Value::String(lua.create_string(format!("{}", input.byte())).unwrap()),
        9 => Value::Table(lua.create_table().unwrap()),
        10 => Value::Function(lua.create_function(|_, ()| Ok(())).unwrap()),
        _ => Value::Thread(lua.create_thread(lua.create_function(|_, ()| Ok(())).unwrap()).unwrap()),
    }
}

/// The settings a call may change only when it succeeds as their setter.
fn settings(system: &Table) -> (Value, Value, Value) {
    let get = |name: &str| system.get::<Function>(name).unwrap().call::<Value>(()).unwrap();
    (get("get_gc_percent"), get("go_max_procs"), get("get_memory_limit"))
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with(|fixture| {
        let fixture = fixture.borrow();
        let (lua, system) = (&fixture.lua, &fixture.system);
        let mut input = Input(data);
        // Every profile: a denied call answers `nil, message` and changes nothing too.
        let profile = [Profile::Full, Profile::Observe, Profile::Sandbox][input.byte() as usize % 3];
        lua_system::set_permissions(lua, Permissions::profile(profile)).unwrap();
        for _ in 0..8 {
            let name = fixture.names[input.byte() as usize % fixture.names.len()].as_str();
            let args: MultiValue = (0..input.byte() % 4).map(|_| argument(lua, &mut input)).collect();
            let before = settings(system);
            let function: Function = system.get(name).unwrap();
            let results: Vec<Value> = function.call::<MultiValue>(args).unwrap().into_iter().collect();
            assert_eq!(results.len(), 2, "{name}: two values, got {results:?}");
            let ok = match (&results[0], &results[1]) {
                (Value::Nil, Value::String(_)) => false,
                (value, Value::Nil) if !value.is_nil() => true,
                other => panic!("{name}: value, nil or nil, message; got {other:?}"),
            };
            let after = settings(system);
            let setter = matches!(name, "set_gc_percent" | "go_max_procs" | "set_memory_limit");
            if !(ok && setter) {
                assert_eq!(format!("{before:?}"), format!("{after:?}"), "{name} ({ok}) changed a setting");
            }
            // Back to defaults, so that a tiny memory limit or a one-CPU limit does not starve
            // the rest of the run.
            lua_system::set_permissions(lua, Permissions::default()).unwrap();
            lua_system::set_memory_limit(lua, None).unwrap();
            let reset: Function = system.get("set_gc_percent").unwrap();
            reset.call::<MultiValue>(100).unwrap();
            lua_system::set_max_procs(lua_system::num_cpu()).unwrap();
            lua_system::set_permissions(lua, Permissions::profile(profile)).unwrap();
        }
    });
});
