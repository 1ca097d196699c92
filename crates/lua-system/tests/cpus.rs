//! `num_cpu()` counts the CPUs of the process, not those of the thread that happens to ask
//! first. It is computed once per process, at first use, so this binary holds one test: nothing
//! else may use the module before it.

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

#[test]
fn a_thread_pinned_to_one_cpu_asking_first_still_sees_every_cpu_of_the_process() {
    // The test thread was not pinned: its mask is the process's.
    let process = sched_getaffinity(None).unwrap();
    let cpus = process.count() as usize;
    if cpus < 2 {
        println!("the process has one CPU: no narrower mask to pin a thread to");
        return;
    }
    let first = (0..CpuSet::MAX_CPU).find(|&cpu| process.is_set(cpu)).unwrap();
    let (pinned, num_cpu, from_lua, limit) = std::thread::spawn(move || {
        let mut one = CpuSet::new();
        one.set(first);
        sched_setaffinity(None, &one).unwrap();
        let pinned = sched_getaffinity(None).unwrap().count();
        // The first use of the module in this process, from a state on the pinned thread.
        let lua = lua_system::SystemLua::new().unwrap();
        let from_lua: i64 = lua.load("return require('system').num_cpu()").eval().unwrap();
        (pinned, lua_system::num_cpu(), from_lua, lua_system::max_procs())
    })
    .join()
    .unwrap();
    assert_eq!(pinned, 1, "the asking thread ran on one CPU");
    assert_eq!(num_cpu, cpus, "num_cpu() is the process's count");
    assert_eq!(from_lua, cpus as i64, "system.num_cpu() too");
    if std::env::var_os("GOMAXPROCS").is_none() {
        // The default is the CPU count, lowered to a cgroup quota but not below 2 (Go's rule).
        assert!((2..=cpus).contains(&limit), "the default limit is not the pinned thread's 1: {limit}");
    }
}
