//! The Rust API: exact states, states created by mlua, memory limits, several states.

use lua_system::mlua::{Lua, Table, Value};
use lua_system::{Accounting, SystemLua, Unavailable};

fn exact() -> SystemLua {
    // SAFETY: no test keeps a clone of the `Lua` beyond the `SystemLua`.
    unsafe { SystemLua::new().unwrap() }
}

#[test]
fn exact_state_stats_hold_go_invariants_from_rust() {
    let lua = exact();
    lua.load("t = {} for i = 1, 10000 do t[i] = {i} end").exec().unwrap();
    let s = lua.mem_stats().unwrap();
    assert_eq!(s.accounting, Accounting::Exact);
    let alloc = s.alloc.unwrap();
    assert!(s.total_alloc.unwrap() >= alloc);
    assert_eq!(s.heap_objects.unwrap(), s.mallocs.unwrap() - s.frees.unwrap());
    assert!(s.heap_objects.unwrap() >= 10000);
    assert!(s.next_gc.unwrap() > 0);
    let p = s.process.unwrap();
    let h = p.heap.unwrap();
    assert_eq!(h.heap_sys, h.heap_idle + h.heap_in_use);
    assert!(h.heap_in_use >= alloc);
    assert!(p.sys >= h.heap_sys + p.stack_sys + h.mspan_sys);
}

#[test]
fn rust_and_lua_read_the_same_figures() {
    let lua = exact();
    lua.load("collectgarbage('stop')").exec().unwrap();
    let from_lua: i64 = lua.load("return require('system').heap_objects()").eval().unwrap();
    let from_rust = lua.mem_stats().unwrap().heap_objects.unwrap() as i64;
    // Between the two reads, the only new objects are the chunk's: its closure and prototype
    // blocks, so the difference is small and positive.
    assert!(from_rust >= from_lua && from_rust - from_lua < 50, "{from_lua} vs {from_rust}");
}

#[test]
fn exact_state_allocated_matches_luas_own_count() {
    let lua = exact();
    let (ours, luas): (i64, f64) =
        lua.load("local s = require('system'); return s.allocated(), collectgarbage('count')").eval().unwrap();
    // collectgarbage("count") is KB as a float, measured one call later: equal to the byte.
    assert!((ours as f64 - luas * 1024.0).abs() < 1.0, "{ours} vs {}", luas * 1024.0);
}

#[test]
fn installing_into_an_mlua_state_reports_what_lua_reports_and_declares_the_rest() {
    let lua = Lua::new();
    let module = lua_system::install(&lua).unwrap();
    let stats: Table = lua.load("return require('system').mem_stats()").eval().unwrap();
    assert_eq!(stats.get::<String>("accounting").unwrap(), "observed");
    let alloc: i64 = stats.get("alloc").unwrap();
    assert!(alloc > 0);
    assert!(stats.get::<i64>("num_gc").is_ok());
    let unavailable: Table = stats.get("unavailable").unwrap();
    // next_gc too where Lua does not report the heap during finalizers (5.4, 5.5).
    let mut missing = vec!["total_alloc", "heap_objects", "mallocs", "frees"];
    if cfg!(any(feature = "lua54", feature = "lua55")) {
        missing.push("next_gc");
    } else {
        assert!(stats.get::<i64>("next_gc").unwrap() > 0);
    }
    for field in missing {
        assert!(stats.get::<Value>(field).unwrap().is_nil(), "{field} must be absent");
        let reason: String = unavailable.get(field).unwrap();
        assert!(reason.contains("allocator"), "{field}: {reason}");
    }
    // heap_objects and num_goroutines answer nil and the reason.
    let (value, message): (Value, String) = lua.load("return require('system').heap_objects()").eval().unwrap();
    assert!(value.is_nil());
    assert!(message.starts_with("heap_objects: unavailable: "), "{message}");
    // Coroutines are counted from the coroutine library, as the allocator cannot see them here.
    let goroutines: (i64, i64, i64) = lua
        .load(
            "local s = require('system'); local n = s.num_goroutines(); \
             local cos = {} for i = 1, 10 do cos[i] = coroutine.create(function() end) end \
             local m = s.num_goroutines(); cos = nil; s.gc(); return n, m, s.num_goroutines()",
        )
        .eval()
        .unwrap();
    assert_eq!(goroutines, (1, 11, 1));
    // The figures Lua reports are exact: allocated() is mlua's own count.
    let allocated: i64 = lua.load("return require('system').allocated()").eval().unwrap();
    assert!((allocated - lua.used_memory() as i64).abs() < 4096, "{allocated} vs {}", lua.used_memory());
    // Cycles and the GC percent work as in an exact state.
    lua.load("local s = require('system'); local n = s.mem_stats().num_gc; s.gc(); assert(s.mem_stats().num_gc > n)")
        .exec()
        .unwrap();
    assert_eq!(lua_system::mem_stats(&lua).unwrap().accounting, Accounting::Observed);
    assert_eq!(lua_system::mem_stats(&lua).unwrap().heap_objects, Err(Unavailable::NotOurAllocator));
    drop(module);
}

#[test]
fn installing_twice_reuses_the_records() {
    let lua = Lua::new();
    lua_system::install(&lua).unwrap();
    lua.load("require('system').set_gc_percent(42)").exec().unwrap();
    lua_system::install(&lua).unwrap();
    let percent: i64 = lua.load("return require('system').get_gc_percent()").eval().unwrap();
    assert_eq!(percent, 42);
}

#[test]
fn memory_limit_stops_a_script_which_can_catch_it_and_recover() {
    let lua = exact();
    let in_use = lua.mem_stats().unwrap().alloc.unwrap() as usize;
    assert_eq!(lua_system::set_memory_limit(&lua, Some(in_use + 2 * 1024 * 1024)).unwrap(), None);
    assert_eq!(lua_system::memory_limit(&lua).unwrap(), Some(in_use + 2 * 1024 * 1024));
    let (ok, message): (bool, String) =
        lua.load("local ok, err = pcall(string.rep, 'x', 8 * 1024 * 1024); return ok, tostring(err)").eval().unwrap();
    assert!(!ok);
    assert!(message.contains("not enough memory"), "{message}");
    // Within the limit, allocation still works (string.rep needs a buffer and the result), once
    // the failed attempt's garbage is collected (Lua 5.1 does not collect on a failed allocation).
    let len: i64 = lua.load("collectgarbage() return #string.rep('y', 256 * 1024)").eval().unwrap();
    assert_eq!(len, 256 * 1024);
    // Another state is unaffected.
    let other = exact();
    let len: i64 = other.load("return #string.rep('z', 8 * 1024 * 1024)").eval().unwrap();
    assert_eq!(len, 8 * 1024 * 1024);
    // Lifting the limit makes room again.
    lua_system::set_memory_limit(&lua, None).unwrap();
    let len: i64 = lua.load("return #string.rep('x', 8 * 1024 * 1024)").eval().unwrap();
    assert_eq!(len, 8 * 1024 * 1024);
}

#[test]
fn a_limit_below_usage_is_accepted_and_stops_growth() {
    let lua = exact();
    lua_system::set_memory_limit(&lua, Some(1024)).unwrap();
    let result = lua.load("local t = {} for i = 1, 1e6 do t[i] = i end").exec();
    assert!(result.is_err());
    lua_system::set_memory_limit(&lua, None).unwrap();
    lua.load("local t = {} for i = 1, 1000 do t[i] = i end").exec().unwrap();
}

#[test]
fn observed_states_use_mluas_memory_limit() {
    let lua = Lua::new();
    lua_system::install(&lua).unwrap();
    lua_system::set_memory_limit(&lua, Some(lua.used_memory() + 1024 * 1024)).unwrap();
    assert!(lua.load("local s = string.rep('x', 4 * 1024 * 1024)").exec().is_err());
    assert!(lua_system::memory_limit(&lua).unwrap().is_some());
    lua_system::set_memory_limit(&lua, None).unwrap();
    assert_eq!(lua_system::memory_limit(&lua).unwrap(), None);
}

#[test]
fn states_are_accounted_separately() {
    let a = exact();
    let b = exact();
    // Reading from Rust goes through mlua, which may allocate a little in the state it reads
    // (Lua 5.1 allocates to push a C function): measure that, then check a's work adds nothing more.
    let first = b.mem_stats().unwrap();
    let second = b.mem_stats().unwrap();
    let read_cost = second.heap_objects.unwrap() - first.heap_objects.unwrap();
    a.load("big = {} for i = 1, 100000 do big[i] = {} end").exec().unwrap();
    let after = b.mem_stats().unwrap();
    assert_eq!(after.heap_objects.unwrap() - second.heap_objects.unwrap(), read_cost);
    assert!(a.mem_stats().unwrap().heap_objects.unwrap() > 100000);
}

#[test]
fn dropping_a_state_frees_every_block() {
    // Each state is closed by its drop; leaks would show under valgrind (see the README).
    for _ in 0..20 {
        let lua = exact();
        lua.load("local t = {} for i = 1, 1000 do t[i] = coroutine.create(function() end) end require('system').gc()")
            .exec()
            .unwrap();
    }
}

#[test]
fn handles_outliving_the_state_report_it_destroyed_instead_of_crashing() {
    let lua = exact();
    let table: Table = lua.load("return {1, 2, 3}").eval().unwrap();
    drop(lua);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| table.raw_len()));
    assert!(result.is_err(), "using a table of a closed state panics (mlua: destroyed)");
}

#[test]
fn the_module_is_not_in_states_it_was_not_installed_in() {
    let lua = Lua::new();
    assert!(lua_system::mem_stats(&lua).is_err());
    assert!(lua.load("return require('system')").exec().is_err());
}
