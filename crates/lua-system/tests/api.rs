//! The Rust API: exact states, states created by mlua, memory limits, several states.

use lua_system::mlua::{Lua, Table, Value};
use lua_system::{Accounting, SystemLua};

fn exact() -> SystemLua {
    SystemLua::new().unwrap()
}

/// A state the module made itself, with every library.
fn made_by_the_module() -> SystemLua {
    // SAFETY: no test keeps a clone of the `Lua` beyond the `SystemLua`.
    unsafe { SystemLua::unsafe_new().unwrap() }
}

#[test]
fn exact_state_stats_hold_go_invariants_from_rust() {
    let lua = made_by_the_module();
    lua.load("t = {} for i = 1, 10000 do t[i] = {i} end").exec().unwrap();
    let s = lua.mem_stats().unwrap();
    assert_eq!(s.accounting, Accounting::Exact);
    let alloc = s.alloc;
    assert!(s.total_alloc >= alloc);
    assert_eq!(s.heap_objects, s.mallocs - s.frees);
    assert!(s.heap_objects >= 10000);
    assert!(s.next_gc > 0);
    let p = s.process.unwrap();
    let h = p.heap.unwrap();
    // This test binary keeps the system allocator: even with the `jemalloc` feature (which the
    // runner turns on in a workspace build), the figures are glibc's, not an idle jemalloc's.
    assert_eq!(h.source, "glibc");
    assert_eq!(h.heap_sys, h.heap_idle + h.heap_in_use);
    assert!(h.heap_in_use >= alloc);
    assert!(p.sys >= h.heap_sys + p.stack_sys + h.mspan_sys);
}

#[test]
fn rust_and_lua_read_the_same_figures() {
    let lua = exact();
    lua.load("collectgarbage('stop')").exec().unwrap();
    let from_lua: i64 = lua.load("return require('system').heap_objects()").eval().unwrap();
    let from_rust = lua.mem_stats().unwrap().heap_objects as i64;
    // Between the two reads, the only new objects are the chunk's: its closure and prototype
    // blocks, so the difference is small and positive.
    assert!(from_rust >= from_lua && from_rust - from_lua < 50, "{from_lua} vs {from_rust}");
}

#[test]
fn exact_state_allocated_matches_luas_own_count() {
    // collectgarbage("count") is KB as a float, measured one call later: equal to the byte.
    allocated_matches_luas_count(&exact());
}

/// Runs `script`, which returns `s.allocated()` then `collectgarbage("count")`, twice (the first
/// run may grow the stack between the two reads) and checks that they agree to the byte.
fn allocated_matches_luas_count(lua: &Lua) {
    let script = "local s = require('system') return s.allocated(), collectgarbage('count')";
    let _: (i64, f64) = lua.load(script).eval().unwrap();
    let (ours, luas): (i64, f64) = lua.load(script).eval().unwrap();
    assert!((ours as f64 - luas * 1024.0).abs() < 1.0, "{ours} vs {}", luas * 1024.0);
}

#[test]
fn both_constructors_count_every_block() {
    // The safe constructor counts in front of mlua's allocator from the bare state on, whose
    // figures the module knows exactly where its calibration matches mlua's bare state (Lua
    // 5.2 to 5.5); elsewhere it counts the blocks made since. The unsafe one allocates every
    // block itself.
    let calibrated = cfg!(not(any(feature = "lua51", feature = "luajit")));
    for (lua, exact) in [(exact(), calibrated), (made_by_the_module(), true)] {
        assert_eq!(lua.accounting(), if exact { Accounting::Exact } else { Accounting::Interposed });
        let added: i64 = lua
            .load(
                "local s = require('system'); collectgarbage('stop'); local n = s.heap_objects(); \
                 local t = {}; local m = s.heap_objects(); collectgarbage('restart'); return m - n",
            )
            .eval()
            .unwrap();
        assert_eq!(added, 1, "one table, one block");
        allocated_matches_luas_count(&lua);
    }
}

#[test]
fn installing_into_an_mlua_state_counts_from_the_load() {
    let lua = Lua::new();
    let module = lua_system::install(&lua).unwrap();
    let stats: Table = lua.load("return require('system').mem_stats()").eval().unwrap();
    assert_eq!(stats.get::<String>("accounting").unwrap(), "interposed");
    // Every spec field is there: scripts written for the spec run unchanged.
    for field in [
        "alloc",
        "total_alloc",
        "sys",
        "heap_alloc",
        "heap_sys",
        "heap_idle",
        "heap_in_use",
        "heap_released",
        "heap_objects",
        "stack_in_use",
        "stack_sys",
        "mspan_in_use",
        "mspan_sys",
        "num_gc",
        "next_gc",
    ] {
        // Where another allocator serves the process (valgrind's malloc), the process heap
        // figures are declared unavailable with the reason instead (docs/figures.md).
        let declared = || {
            let unavailable: Option<Table> = stats.get("unavailable").unwrap();
            unavailable
                .and_then(|u| u.get::<Option<String>>(field).unwrap())
                .is_some_and(|why| why.contains("another one"))
        };
        let process_heap = field.starts_with("heap_") && field != "heap_alloc" && field != "heap_objects"
            || field.starts_with("mspan_");
        assert!(stats.get::<i64>(field).is_ok() || process_heap && declared(), "{field} must be a number");
    }
    // Bytes are exact: the state's own count.
    allocated_matches_luas_count(&lua);
    // Blocks: those allocated since the load, exactly.
    let added: i64 = lua
        .load(
            "local s = require('system'); collectgarbage('stop'); local n = s.heap_objects(); \
               local t = {{}, {}}; local m = s.heap_objects(); collectgarbage('restart'); return m - n",
        )
        .eval()
        .unwrap();
    // LuaJIT keeps a small table's array part in the table's own block.
    assert_eq!(added, if cfg!(feature = "luajit") { 3 } else { 4 }, "three tables, one array part");
    // Coroutines that can run are counted.
    let goroutines: (i64, i64, i64) = lua
        .load(
            "local s = require('system'); local n = s.num_goroutines(); \
             local cos = {} for i = 1, 10 do cos[i] = coroutine.create(function() end) end \
             local m = s.num_goroutines(); cos = nil; s.gc(); return n, m, s.num_goroutines()",
        )
        .eval()
        .unwrap();
    assert_eq!(goroutines, (1, 11, 1));
    lua.load("local s = require('system'); local n = s.mem_stats().num_gc; s.gc(); assert(s.mem_stats().num_gc > n)")
        .exec()
        .unwrap();
    let stats = lua_system::mem_stats(&lua).unwrap();
    assert_eq!(stats.accounting, Accounting::Interposed);
    assert_eq!(stats.heap_objects, stats.mallocs - stats.frees);
    assert!(stats.total_alloc >= stats.alloc);
    drop(module);
}

#[test]
fn a_clone_of_the_lua_outliving_a_safe_system_lua_stays_safe() {
    let lua = exact();
    let clone: Lua = (*lua).clone();
    let system: Table = lua.load("return require('system')").eval().unwrap();
    drop(lua);
    // mlua still owns the state; the module gave its allocator back and answers that it is gone.
    let (value, message): (Value, String) =
        system.get::<lua_system::mlua::Function>("allocated").unwrap().call(()).unwrap();
    assert!(value.is_nil());
    assert!(message.contains("gone"), "{message}");
    let n: i64 = clone.load("local t = {} for i = 1, 1000 do t[i] = {} end return #t").eval().unwrap();
    assert_eq!(n, 1000);
}

/// A limited state allocates from an arena of its own (feature `jemalloc`): mlua cannot get its
/// allocator back when the `SystemLua` goes, so the module's stays until mlua closes the state,
/// and a clone of the `Lua` keeps working with blocks from both.
#[test]
fn a_clone_outliving_a_limited_system_lua_keeps_working() {
    let lua = lua_system::SystemLua::new().unwrap();
    lua.load("kept = {} for i = 1, 1000 do kept[i] = {i} end").exec().unwrap();
    lua.set_memory_limit(64 << 20).unwrap();
    lua.load("for i = 1, 1000 do kept[i] = {i, tostring(i)} end").exec().unwrap();
    let clone: Lua = (*lua).clone();
    drop(lua);
    let n: i64 = clone.load("local t = {} for i = 1, 1000 do t[i] = {} end kept = nil return #t").eval().unwrap();
    assert_eq!(n, 1000);
    clone.gc_collect().unwrap();
    drop(clone);
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
    let in_use = lua.mem_stats().unwrap().alloc as usize;
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
fn interposed_states_get_the_modules_memory_limit() {
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
    // (Lua 5.1 allocates to push a C function, and every other read one block more: 3, 2, 3...):
    // measure the most a read adds, then check that a's 100,000 tables add nothing to b.
    let reads: Vec<u64> = (0..4).map(|_| b.mem_stats().unwrap().heap_objects).collect();
    let read_cost = reads.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    a.load("big = {} for i = 1, 100000 do big[i] = {} end").exec().unwrap();
    let after = b.mem_stats().unwrap();
    assert!(after.heap_objects - reads[3] <= read_cost, "{reads:?} then {}", after.heap_objects);
    assert!(a.mem_stats().unwrap().heap_objects > 100000);
}

#[test]
fn dropping_a_state_frees_every_block() {
    // Each state is closed by its drop; leaks would show under valgrind (see the README).
    for round in 0..20 {
        let lua = if round % 2 == 0 { exact() } else { made_by_the_module() };
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

/// A host's script that saved `coroutine.create` and `coroutine.wrap` before the module was
/// installed (libraries keep them in locals): the coroutines they make count all the same, in
/// every Lua (5.1 and LuaJIT, which do not tag thread blocks, patch the library's functions).
#[test]
fn coroutines_from_functions_saved_before_install_count() {
    let lua = Lua::new();
    lua.load("saved_create, saved_wrap = coroutine.create, coroutine.wrap").exec().unwrap();
    lua_system::install(&lua).unwrap();
    let (before, after, gone): (i64, i64, i64) = lua
        .load(
            "local system = require('system') system.gc() local base = system.num_goroutines() \
             local kept = {} for i = 1, 5 do \
               kept[#kept + 1] = saved_create(function() coroutine.yield() end) coroutine.resume(kept[#kept]) \
               local w = saved_wrap(function() coroutine.yield() end) w() kept[#kept + 1] = w end \
             local during = system.num_goroutines() kept = nil system.gc() \
             return base, during, system.num_goroutines()",
        )
        .eval()
        .unwrap();
    assert_eq!((after - before, gone), (10, before));
}

/// Emergency collections (Lua 5.2 to 5.5 collect when an allocation is refused, then ask again)
/// run no finalizers; a host that does not wrap `luaC_fullgc` (this test binary does not) gets
/// them counted by the state's allocator, in both kinds of `SystemLua`: the module's allocator,
/// and mlua's with the module's chained. (States the module is installed into are tried by
/// tests/lua/cycles_test.lua in stock interpreters; there a weak table's entry is a weaker
/// witness on 5.3, kept alive past some emergency collections.) Witness: a weak table's entry,
/// cleared by each cycle that ran, checked after every statement that allocates (it misses an
/// emergency collection that ends in the same statement as another, at most one a round, or two
/// where other garbage stays at the limit). With the collector stopped, only the emergency
/// collections run. 5.2 runs none while the collector is stopped; 5.1 and LuaJIT none at all.
#[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
#[test]
fn emergency_collections_count_without_a_wrapped_collector() {
    const ROUNDS: i64 = 5;
    for (kind, lua, slack) in
        [("SystemLua::new", &*exact(), ROUNDS), ("SystemLua::unsafe_new", &*made_by_the_module(), 2 * ROUNDS)]
    {
        let (cleared, counted): (i64, i64) = lua
            .load(
                r#"
                local system = require("system")
                collectgarbage()
                local pool, weak, cleared = {}, setmetatable({}, { __mode = "v" }), 0
                for i = 1, 1000 do pool[i] = {} end
                local function renew() weak[1] = pool[#pool]; pool[#pool] = nil end
                local function look() if weak[1] == nil then cleared = cleared + 1; renew() end end
                renew()
                collectgarbage("stop")
                local n0 = system.mem_stats().num_gc
                system.set_memory_limit(system.allocated() + 2 * 1024 * 1024)
                for _ = 1, 5 do
                  local t, k = {}, 0
                  pcall(function() while true do k = k + 1; t[k] = { k }; look() end end)
                  t = nil
                  look()
                end
                local counted = system.mem_stats().num_gc - n0
                system.set_memory_limit(-1)
                collectgarbage("restart")
                return cleared, counted
                "#,
            )
            .eval()
            .unwrap();
        assert!(cleared >= ROUNDS, "{kind}: emergency collections ran: {cleared} (counted {counted})");
        assert!((cleared..=cleared + slack).contains(&counted), "{kind}: counted {counted}, witness {cleared}");
    }
}
