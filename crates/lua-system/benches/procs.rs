//! The cost of the CPU limit (go_max_procs): a change (the change lock, an atomic store and the
//! host's listeners, none here) against a read (one atomic load). No thread is touched, so the
//! cost does not depend on the process's thread count.
//!
//!   cargo bench -p lua-system --bench procs

use criterion::{Criterion, criterion_group, criterion_main};

fn procs(c: &mut Criterion) {
    let cpus = lua_system::num_cpu();
    let original = lua_system::max_procs();
    let mut group = c.benchmark_group("go_max_procs");
    let mut next = 1;
    group.bench_function("set_max_procs(n) (a change)", |b| {
        b.iter(|| {
            next = if next == 1 { cpus.max(2) } else { 1 };
            lua_system::set_max_procs(next).unwrap()
        })
    });
    group.bench_function("max_procs() (a read)", |b| b.iter(lua_system::max_procs));
    group.finish();
    lua_system::set_max_procs(original).unwrap();
}

criterion_group!(benches, procs);
criterion_main!(benches);
