//! The cost of allocation accounting: allocation-heavy Lua workloads in a state whose allocator
//! is the module's (`SystemLua`) against a plain `mlua::Lua::new()` state, side by side.
//!
//!   cargo bench -p lua-system --bench accounting

use criterion::{Criterion, criterion_group, criterion_main};
use lua_system::SystemLua;
use lua_system::mlua::{Function, Lua, StdLib, Table, Value};

/// The workloads of bench/workloads.lua, at their small sizes.
const WORKLOADS: &str = include_str!("../../../bench/workloads.lua");

/// Workload `index` of bench/workloads.lua in `lua`, as a function running it once, small.
fn workload(lua: &Lua, index: usize) -> (String, Function) {
    let workloads: Table = lua.load(WORKLOADS).set_name("@bench/workloads.lua").eval().unwrap();
    let entry: Table = workloads.get(index).unwrap();
    let run: Function = entry.get(2).unwrap();
    let small = lua.create_function(move |_, ()| run.call::<Value>(true)).unwrap();
    (entry.get(1).unwrap(), small)
}

fn accounting(c: &mut Criterion) {
    for index in 1..=3 {
        let plain = Lua::new_with(StdLib::ALL_SAFE, Default::default()).unwrap();
        let (name, run_plain) = workload(&plain, index);
        // SAFETY: the `Lua` is not cloned.
        let exact = unsafe { SystemLua::unsafe_new_with(StdLib::ALL_SAFE).unwrap() };
        let (_, run_exact) = workload(&exact, index);
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("mlua Lua::new", |b| b.iter(|| run_plain.call::<Value>(()).unwrap()));
        group.bench_function("SystemLua (accounted)", |b| b.iter(|| run_exact.call::<Value>(()).unwrap()));
        group.finish();
    }
}

criterion_group!(benches, accounting);
criterion_main!(benches);
