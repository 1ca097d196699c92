//! The cost of changing the CPU limit (go_max_procs(n)) as the process's thread count grows:
//! every thread's affinity is set, so the cost is linear in threads.
//!
//!   cargo bench -p lua-system --bench procs

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};

fn procs(c: &mut Criterion) {
    let cpus = lua_system::num_cpu();
    let original = lua_system::max_procs();
    let mut group = c.benchmark_group("set_max_procs (one change)");
    let stop = Arc::new(AtomicBool::new(false));
    let mut idle = Vec::new();
    for threads in [1usize, 8, 64] {
        while idle.len() + 1 < threads {
            let stop = Arc::clone(&stop);
            idle.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(std::time::Duration::from_millis(50));
                }
            }));
        }
        let mut next = 1;
        group.bench_function(format!("{threads} threads"), |b| {
            b.iter(|| {
                next = if next == 1 { cpus.max(2) } else { 1 };
                lua_system::set_max_procs(next).unwrap()
            })
        });
    }
    group.bench_function("max_procs() (a read)", |b| b.iter(lua_system::max_procs));
    group.finish();
    stop.store(true, Ordering::Relaxed);
    for thread in idle {
        thread.join().unwrap();
    }
    lua_system::set_max_procs(original).unwrap();
}

criterion_group!(benches, procs);
criterion_main!(benches);
