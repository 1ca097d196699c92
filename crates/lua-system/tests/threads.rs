//! Many states on many threads at once, and the process-wide CPU limit shared between them.
//! Tests in this file change the process's CPU affinity, so they take turns (`SERIAL`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lua_system::SystemLua;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poison| poison.into_inner())
}

const EVERY_FUNCTION: &str = r#"
    local system = require("system")
    local cpus = system.num_cpu()
    for round = 1, ROUNDS do
        local garbage = {}
        for i = 1, 200 do garbage[i] = { i } end
        local s = assert(system.mem_stats())
        assert(s.alloc == s.heap_alloc and s.total_alloc >= s.alloc)
        -- Process figures are checked where present (under valgrind they are declared unavailable).
        if s.heap_sys then
            assert(s.heap_sys == s.heap_idle + s.heap_in_use and s.heap_in_use >= s.heap_alloc)
        else
            assert(s.unavailable.heap_sys)
        end
        assert(s.heap_objects == s.mallocs - s.frees and s.next_gc > 0)
        assert(system.allocated() > 0 and system.heap_objects() > 0)
        assert(system.gc() == true)
        local percent = (round * 7) % 300
        assert(system.set_gc_percent(percent))
        assert(system.get_gc_percent() == percent)
        local co = coroutine.create(function() coroutine.yield() end)
        coroutine.resume(co)
        assert(system.num_goroutines() >= 2)
        local n = (round % cpus) + 1
        assert(system.go_max_procs(n))
        local now = system.go_max_procs()
        assert(now >= 1 and now <= cpus, "limit in range: " .. tostring(now))
        assert(system.num_cpu() == cpus)
        assert(#system.hostname() > 0 and system.pid() > 0)
    end
    return system.mem_stats().num_gc
"#;

#[test]
fn many_threads_each_with_a_state_call_every_function_at_once() {
    let _serial = serial();
    let original = lua_system::max_procs();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let lua = SystemLua::new().unwrap();
                let cycles: i64 =
                    lua.load(EVERY_FUNCTION.replace("ROUNDS", "50")).set_name(format!("thread {t}")).eval().unwrap();
                assert!(cycles >= 50, "each state counted its own cycles: {cycles}");
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a thread failed");
    }
    lua_system::set_max_procs(original).unwrap();
}

#[test]
fn listeners_hear_every_change_in_order_and_stop_when_dropped() {
    let _serial = serial();
    let original = lua_system::max_procs();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let subscription = {
        let heard = Arc::clone(&heard);
        lua_system::on_max_procs_change(move |previous, current| heard.lock().unwrap().push((previous, current)))
    };
    let first = if original == 1 { 2 } else { 1 };
    lua_system::set_max_procs(first).unwrap();
    lua_system::set_max_procs(7).unwrap();
    lua_system::set_max_procs(7).unwrap(); // no change, no call
    drop(subscription);
    lua_system::set_max_procs(original).unwrap();
    assert_eq!(*heard.lock().unwrap(), vec![(original, first), (first, 7)]);
}

#[test]
fn a_change_from_lua_reaches_rust_listeners() {
    let _serial = serial();
    let original = lua_system::max_procs();
    let calls = Arc::new(AtomicUsize::new(0));
    let _subscription = {
        let calls = Arc::clone(&calls);
        lua_system::on_max_procs_change(move |_, current| {
            assert_eq!(current, 1);
            calls.fetch_add(1, Ordering::SeqCst);
        })
    };
    let lua = SystemLua::new().unwrap();
    lua.load("require('system').go_max_procs(1)").exec().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(lua_system::max_procs(), 1);
    drop(_subscription);
    lua_system::set_max_procs(original).unwrap();
}

#[test]
fn a_listener_cannot_change_the_limit_itself() {
    let _serial = serial();
    let original = lua_system::max_procs();
    let result = Arc::new(Mutex::new(None));
    let subscription = {
        let result = Arc::clone(&result);
        lua_system::on_max_procs_change(move |_, _| {
            *result.lock().unwrap() = Some(lua_system::set_max_procs(2).map_err(|e| e.to_string()));
        })
    };
    lua_system::set_max_procs(1).unwrap();
    drop(subscription);
    lua_system::set_max_procs(original).unwrap();
    let answer = result.lock().unwrap().take().unwrap();
    assert_eq!(answer, Err("cannot change the limit from a change listener".to_owned()));
}

#[test]
fn new_threads_inherit_the_limit() {
    let _serial = serial();
    let original = lua_system::max_procs();
    lua_system::set_max_procs(1).unwrap();
    let allowed = std::thread::spawn(|| {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap().to_owned()
    })
    .join()
    .unwrap();
    lua_system::set_max_procs(original).unwrap();
    let cpus = allowed.split(':').nth(1).unwrap().trim();
    assert!(!cpus.contains(',') && !cpus.contains('-'), "one CPU: {allowed}");
}

/// Many threads, each creating and dropping states in a loop for a bounded time, calling every
/// function with the setters included (GC percent, CPU limit, memory limit), under the observe
/// profile half the time: no crash, no deadlock, and every answer consistent.
#[test]
fn stress_states_on_many_threads_for_three_seconds() {
    let _serial = serial();
    let original = lua_system::max_procs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                // At least one round each, however the threads are scheduled (valgrind runs one
                // at a time), then rounds until the deadline.
                let mut rounds = 0u64;
                loop {
                    let lua = SystemLua::new().unwrap();
                    let observe = rounds % 2 == 1;
                    if observe {
                        let profile = lua_system::Permissions::profile(lua_system::Profile::Observe);
                        lua_system::set_permissions(&lua, profile).unwrap();
                    }
                    lua.globals().set("OBSERVE", observe).unwrap();
                    lua.globals().set("SEED", t * 1000 + rounds as usize).unwrap();
                    lua.load(
                        r#"
                        local s = require("system")
                        local cpus = s.num_cpu()
                        for i = 1, 20 do
                            local p = (SEED * 7 + i * 13) % 400
                            local previous, err = s.set_gc_percent(p)
                            if OBSERVE then
                                assert(previous == nil and err == "permission denied: system.set_gc_percent")
                            else
                                assert(previous and s.get_gc_percent() == p, "own setting read back")
                            end
                            local n = (SEED + i) % cpus + 1
                            local before, err2 = s.go_max_procs(n)
                            assert((OBSERVE and before == nil and err2:find("permission denied")) or before >= 1)
                            local now = s.go_max_procs()
                            assert(now >= 1 and now <= 1024)
                            local limit, err3 = s.set_memory_limit(s.allocated() + 1024 * 1024)
                            assert(OBSERVE == (limit == nil))
                            local t = {} for j = 1, 200 do t[j] = { j } end
                            s.set_memory_limit(-1)
                            local stats = assert(s.mem_stats())
                            assert(stats.heap_objects == stats.mallocs - stats.frees)
                            assert(s.num_goroutines() >= 1 and s.pid() > 0 and #s.hostname() > 0)
                            assert(OBSERVE == (s.gc() == nil))
                        end
                    "#,
                    )
                    .exec()
                    .unwrap();
                    rounds += 1;
                    if std::time::Instant::now() >= deadline {
                        break rounds;
                    }
                }
            })
        })
        .collect();
    let rounds: u64 = threads.into_iter().map(|thread| thread.join().expect("a stress thread failed")).sum();
    println!("{rounds} rounds on 8 threads");
    lua_system::set_max_procs(original).unwrap();
}
