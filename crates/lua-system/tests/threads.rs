//! Many states on many threads at once, the process-wide CPU limit shared between them, and the
//! process figures while other threads allocate. Tests in this file change the process-wide CPU
//! limit or the process sample interval, so they take turns (`SERIAL`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lua_system::{ProcessMemory, SystemLua};

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

/// The CPUs a thread may run on, as the kernel lists them in its `status` file.
fn cpus_allowed(status: &str) -> Option<String> {
    let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
    Some(line.split(':').nth(1)?.trim().to_owned())
}

/// The affinity of every thread of this process now (threads that exit meanwhile left out).
fn every_threads_cpus() -> Vec<(String, String)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            Some((task.file_name().to_string_lossy().into_owned(), cpus_allowed(&status)?))
        })
        .collect()
}

/// `go_max_procs(n)` sets the limit and runs the listeners, and changes no setting of the
/// operating system: every thread, one created after the change and a child process keep the
/// process's CPUs.
#[test]
fn go_max_procs_changes_the_limit_and_no_cpu_affinity() {
    let _serial = serial();
    let original = lua_system::max_procs();
    let process_cpus = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
    if original == 1 {
        lua_system::set_max_procs(2).unwrap(); // so that go_max_procs(1) is a change
    }
    let heard = Arc::new(Mutex::new(Vec::new()));
    let subscription = {
        let heard = Arc::clone(&heard);
        lua_system::on_max_procs_change(move |previous, current| heard.lock().unwrap().push((previous, current)))
    };
    // A thread alive across the change, which reads its own affinity after it.
    let (changed, wait_for_change) = std::sync::mpsc::channel::<()>();
    let existing = std::thread::spawn(move || {
        wait_for_change.recv().unwrap();
        cpus_allowed(&std::fs::read_to_string("/proc/thread-self/status").unwrap()).unwrap()
    });
    let before = lua_system::max_procs();
    let lua = SystemLua::new().unwrap();
    let previous: i64 = lua.load("return assert(require('system').go_max_procs(1))").eval().unwrap();
    drop(subscription);
    changed.send(()).unwrap();
    let existing_cpus = existing.join().unwrap();
    let after_change = every_threads_cpus();
    let new_thread_cpus =
        std::thread::spawn(|| cpus_allowed(&std::fs::read_to_string("/proc/thread-self/status").unwrap()).unwrap())
            .join()
            .unwrap();
    let child = std::process::Command::new("cat").arg("/proc/self/status").output().unwrap();
    let limit = lua_system::max_procs();
    lua_system::set_max_procs(original).unwrap();

    assert_eq!((previous, limit), (before as i64, 1), "go_max_procs(1) returned the previous limit and set it");
    assert_eq!(*heard.lock().unwrap(), vec![(before, 1)], "the listener heard the change");
    assert!(after_change.len() >= 2, "this thread and the state's: {after_change:?}");
    for (tid, cpus) in &after_change {
        assert_eq!(cpus, &process_cpus, "thread {tid} keeps the process's CPUs");
    }
    assert_eq!(existing_cpus, process_cpus, "a thread alive across the change keeps them");
    assert_eq!(new_thread_cpus, process_cpus, "a thread created after the change has them");
    let child_cpus = cpus_allowed(&String::from_utf8_lossy(&child.stdout));
    assert_eq!(child_cpus.as_deref(), Some(process_cpus.as_str()), "a child process has them");
}

/// Another thread maps and unmaps 64 MB blocks (above glibc's mmap threshold: each is a
/// mapping of its own) while this one calls `mem_stats()`, the process figures read afresh at
/// every call: Go's invariants hold on every call, `sys >= heap_sys + stack_sys + mspan_sys`
/// included, though the kernel and the allocator are read at different moments.
#[test]
fn process_figures_hold_go_invariants_while_another_thread_maps_and_unmaps_64_mb() {
    const BLOCK: usize = 64 << 20;
    let _serial = serial();
    let lua = SystemLua::new().unwrap();
    if lua.mem_stats().unwrap().process.unwrap().heap.is_err()
        && std::env::var("LD_PRELOAD").is_ok_and(|preload| preload.contains("vgpreload"))
    {
        println!("under valgrind malloc is valgrind's: no allocator statistics to check");
        return;
    }
    lua_system::set_process_sample_interval(Duration::ZERO);
    let stop = Arc::new(AtomicBool::new(false));
    let blocks = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (stop, blocks) = (Arc::clone(&stop), Arc::clone(&blocks));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut block = vec![1u8; BLOCK]; // malloc, then memset: every page touched
                std::hint::black_box(&mut block);
                drop(block);
                blocks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (retries, raised) = (ProcessMemory::retries(), ProcessMemory::raised_sys());
    // About two seconds, and at least 20 blocks mapped and unmapped meanwhile however slowly the
    // threads run.
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut calls, mut num_gc) = (0u64, 0);
    let failure = loop {
        if (Instant::now() >= deadline && blocks.load(Ordering::Relaxed) >= 20) || churn.is_finished() {
            break None;
        }
        let s = lua.mem_stats().unwrap();
        calls += 1;
        let p = s.process.unwrap();
        let h = p.heap.unwrap();
        let checks = [
            ("total_alloc >= alloc", s.total_alloc >= s.alloc),
            ("heap_objects == mallocs - frees", s.heap_objects == s.mallocs - s.frees),
            ("heap_sys == heap_idle + heap_in_use", h.heap_sys == h.heap_idle + h.heap_in_use),
            ("heap_released <= heap_idle", h.heap_released <= h.heap_idle),
            ("heap_in_use >= heap_alloc", h.heap_in_use >= s.alloc),
            ("stack_in_use <= stack_sys", p.stack_in_use <= p.stack_sys),
            ("mspan_in_use <= mspan_sys", h.mspan_in_use <= h.mspan_sys),
            ("sys >= heap_sys + stack_sys + mspan_sys", p.sys >= h.heap_sys + p.stack_sys + h.mspan_sys),
            ("num_gc never decreases", s.num_gc >= num_gc),
            ("next_gc > 0", s.next_gc > 0),
        ];
        if let Some((broken, _)) = checks.iter().find(|(_, holds)| !holds) {
            break Some(format!("call {calls}: {broken} broke: {s:?}"));
        }
        num_gc = s.num_gc;
    };
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("the allocating thread failed");
    lua_system::set_process_sample_interval(Duration::from_millis(10));
    let (retries, raised) = (ProcessMemory::retries() - retries, ProcessMemory::raised_sys() - raised);
    let blocks = blocks.load(Ordering::Relaxed);
    println!(
        "{calls} calls while {blocks} blocks of 64 MB came and went: {retries} retries, sys raised {raised} times"
    );
    assert_eq!(failure, None);
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
