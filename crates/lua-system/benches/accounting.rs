//! The cost of allocation accounting: allocation-heavy Lua workloads in a state whose allocator
//! is the module's (`SystemLua`) against a plain `mlua::Lua::new()` state, side by side.
//!
//!   cargo bench -p lua-system --bench accounting

use criterion::{Criterion, criterion_group, criterion_main};
use lua_system::SystemLua;
use lua_system::mlua::{Function, Lua, StdLib};

/// (name, Lua source returning a function that runs the workload once)
const WORKLOADS: &[(&str, &str)] = &[
    (
        "binary_trees_12",
        r#"
        local function bottom_up(depth)
            if depth == 0 then return {} end
            depth = depth - 1
            return { bottom_up(depth), bottom_up(depth) }
        end
        local function check(tree)
            if tree[1] then return 1 + check(tree[1]) + check(tree[2]) end
            return 1
        end
        return function()
            local long_lived = bottom_up(12)
            local sum = 0
            for depth = 4, 12, 2 do
                for _ = 1, 2 ^ (12 - depth + 4) do sum = sum + check(bottom_up(depth)) end
            end
            return sum + check(long_lived)
        end
        "#,
    ),
    (
        "string_building",
        r#"
        return function()
            local parts = {}
            for i = 1, 20000 do parts[#parts + 1] = "item " .. i .. ";" end
            return #table.concat(parts)
        end
        "#,
    ),
    (
        "table_churn",
        r#"
        return function()
            local live = {}
            for i = 1, 100000 do live[i % 1000 + 1] = { i, i * 2, name = "x" } end
            return #live
        end
        "#,
    ),
];

fn workload(lua: &Lua, source: &str) -> Function {
    lua.load(source).eval().unwrap()
}

fn accounting(c: &mut Criterion) {
    for (name, source) in WORKLOADS {
        let mut group = c.benchmark_group(*name);
        group.sample_size(20);
        let plain = Lua::new_with(StdLib::ALL_SAFE, Default::default()).unwrap();
        let run_plain = workload(&plain, source);
        // SAFETY: the `Lua` is not cloned.
        let exact = unsafe { SystemLua::with_libs(StdLib::ALL_SAFE).unwrap() };
        let run_exact = workload(&exact, source);
        group.bench_function("mlua Lua::new", |b| b.iter(|| run_plain.call::<i64>(()).unwrap()));
        group.bench_function("SystemLua (accounted)", |b| b.iter(|| run_exact.call::<i64>(()).unwrap()));
        group.finish();
    }
}

criterion_group!(benches, accounting);
criterion_main!(benches);
