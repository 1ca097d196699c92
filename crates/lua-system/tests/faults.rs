//! The module when the machine around it misbehaves: each fault is injected (feature
//! `fault-injection`) and every answer must be a correct value or `nil, message`, with nothing
//! panicking across the FFI boundary and no state corrupted.
//!
//!   cargo test -p lua-system --features fault-injection --test faults
//!
//! Faults are process-wide, so these tests take turns.

use std::sync::Mutex;
use std::time::Duration;

use lua_system::mlua::{Table, Value};
use lua_system::{Fault, SystemLua, inject_fault};

static SERIAL: Mutex<()> = Mutex::new(());

/// Taken by every test for its whole length.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Runs `test` with `fault` injected, and clears it even if the test fails.
fn with_fault(fault: Fault, test: impl FnOnce()) {
    struct Clear(Fault);
    impl Drop for Clear {
        fn drop(&mut self) {
            inject_fault(self.0, false);
        }
    }
    let _clear = Clear(fault);
    inject_fault(fault, true);
    test();
}

fn state() -> SystemLua {
    SystemLua::new().unwrap()
}

/// Checks the module's invariants and that every function still answers by the convention.
fn still_sound(lua: &SystemLua) {
    lua.load(
        r#"
        local s = require("system")
        collectgarbage()
        local stats = assert(s.mem_stats())
        assert(stats.heap_objects == stats.mallocs - stats.frees and stats.total_alloc >= stats.alloc)
        for _, name in ipairs({ "allocated", "heap_objects", "gc", "get_gc_percent", "num_goroutines",
                                "go_max_procs", "num_cpu", "hostname", "pid", "get_memory_limit", "metrics" }) do
            local r = table.pack(s[name]())
            assert(r.n == 2 and r[1] ~= nil and r[2] == nil, name)
        end
    "#,
    )
    .exec()
    .unwrap();
}

#[test]
fn proc_unreadable_leaves_the_state_figures_and_declares_the_process_ones() {
    let _serial = serial();
    with_fault(Fault::ProcUnreadable, || {
        lua_system::set_process_sample_interval(Duration::ZERO);
        let lua = state();
        let stats: Table = lua.load("return require('system').mem_stats()").eval().unwrap();
        assert!(stats.get::<i64>("alloc").unwrap() > 0, "the state's own figures stand");
        assert!(stats.get::<i64>("heap_objects").unwrap() > 0);
        for field in ["sys", "heap_sys", "stack_sys", "rss"] {
            assert!(stats.get::<Value>(field).unwrap().is_nil(), "{field} absent");
            let reason: String = stats.get::<Table>("unavailable").unwrap().get(field).unwrap();
            assert!(reason.contains("cannot read /proc/self/status"), "{field}: {reason}");
        }
        assert!(lua_system::process_memory().is_err());
        lua_system::set_process_sample_interval(Duration::from_millis(10));
    });
}

#[test]
fn hostname_failing_answers_nil_and_a_message() {
    let _serial = serial();
    with_fault(Fault::HostnameUnreadable, || {
        let lua = state();
        let (value, message): (Value, String) = lua.load("return require('system').hostname()").eval().unwrap();
        assert!(value.is_nil());
        assert!(message.starts_with("hostname: cannot read the host name"), "{message}");
        let pid: i64 = lua.load("return require('system').pid()").eval().unwrap();
        assert!(pid > 0, "the rest answers");
    });
}

#[test]
fn an_allocator_returning_null_gives_memory_errors_and_no_corruption() {
    let _serial = serial();
    let lua = state();
    // The script turns the fault on itself, so that it fails inside Lua rather than in mlua's
    // call machinery (which, with no memory at all, answers a memory error of its own).
    let fault = lua
        .create_function(|_, on: bool| {
            inject_fault(Fault::AllocatorFails, on);
            Ok(())
        })
        .unwrap();
    lua.globals().set("fault", fault).unwrap();
    with_fault(Fault::AllocatorFails, || {
        inject_fault(Fault::AllocatorFails, false);
        let (ok, err, stats, message, allocated): (bool, String, Value, String, i64) = lua
            .load(
                r#"
                local s = require("system")
                local tostring, pcall = tostring, pcall
                local function grow() local t = {} for i = 1, 100 do t[i] = { i } end end
                fault(true)
                local ok, err = pcall(grow)
                local stats, message = s.mem_stats()
                local allocated = s.allocated()
                fault(false)
                return ok, tostring(err), stats, tostring(message), allocated
            "#,
            )
            .eval()
            .unwrap();
        assert!(!ok && err.contains("not enough memory"), "{err}");
        assert!(stats.is_nil() && message.contains("not enough memory"), "{message}");
        assert!(allocated > 0, "integers need no memory");
    });
    still_sound(&lua);
}

#[test]
fn a_panic_in_a_module_function_is_caught_and_answered() {
    let _serial = serial();
    let lua = state();
    with_fault(Fault::Panic, || {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {})); // the injected panic is expected: keep stderr quiet
        let answer: (Value, String) = lua.load("return require('system').allocated()").eval().unwrap();
        std::panic::set_hook(previous);
        assert!(answer.0.is_nil());
        assert_eq!(answer.1, "allocated: internal error (a panic was caught)");
    });
    still_sound(&lua);
}

#[test]
fn deep_coroutine_nesting_and_finalizers_calling_in_stay_sound() {
    let _serial = serial();
    let lua = state();
    lua.load(
        r#"
        local s = require("system")
        -- Coroutines nested until Lua refuses (C stack overflow), calling the module at each level.
        local depth = 0
        local function nest()
            depth = depth + 1
            assert(s.num_goroutines() >= depth)
            assert(s.mem_stats())
            local co = coroutine.create(nest)
            local ok, err = coroutine.resume(co)
            if not ok then error(err, 0) end
        end
        local ok, err = pcall(nest)
        assert(not ok and depth > 50, "nesting stopped by Lua: " .. tostring(err) .. " at " .. depth)
        -- Finalizers calling into the module while collections run.
        for i = 1, 100 do
            setmetatable({}, { __gc = function() s.mem_stats() s.gc() s.set_gc_percent(100) end })
        end
        s.gc() s.gc()
    "#,
    )
    .exec()
    .unwrap();
    still_sound(&lua);
}
