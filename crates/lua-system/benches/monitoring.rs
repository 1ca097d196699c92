//! What watching a state costs: one probe sample (what `--mem-profile` takes every interval, on
//! its own thread), the cycle hook's bookkeeping, and rendering the Prometheus text.
//!
//!   cargo bench -p lua-system --bench monitoring
//!
//! A sampler every 10 ms costs `sample / 10 ms` of one core; BENCHMARKS.md has the figures.

use criterion::{Criterion, criterion_group, criterion_main};
use lua_system::SystemLua;

fn monitoring(c: &mut Criterion) {
    let lua = SystemLua::new().unwrap();
    lua.load("live = {} for i = 1, 100000 do live[i] = { i } end").exec().unwrap();
    let probe = lua.probe();
    let stats = lua.mem_stats().unwrap();
    let metrics = stats.metrics();
    let full_collection = lua.load("collectgarbage()").into_function().unwrap();

    let mut group = c.benchmark_group("monitoring");
    group.bench_function("probe.sample()", |b| b.iter(|| probe.sample()));
    group.bench_function("Metrics::to_prometheus()", |b| b.iter(|| metrics.to_prometheus()));
    group.bench_function("full collection, no hook", |b| b.iter(|| full_collection.call::<()>(()).unwrap()));
    lua.on_gc_cycle(Some(Box::new(|cycle| {
        std::hint::black_box(cycle);
    })))
    .unwrap();
    group.bench_function("full collection, with a hook", |b| b.iter(|| full_collection.call::<()>(()).unwrap()));
    group.finish();
}

criterion_group!(benches, monitoring);
criterion_main!(benches);
