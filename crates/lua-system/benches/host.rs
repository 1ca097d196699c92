//! hostname() and pid() against the bare system calls, side by side in one process.
//!
//!   cargo bench -p lua-system --bench host
//!
//! The Lua side runs the call 1000 times in a Lua loop per iteration (criterion's figure is
//! divided by 1000 in BENCHMARKS.md), so mlua's own call overhead is out of the figure.

use criterion::{Criterion, criterion_group, criterion_main};
use lua_system::SystemLua;
use lua_system::mlua::Function;

fn host(c: &mut Criterion) {
    let lua = SystemLua::new().unwrap();
    let lua_loop = |call: &str| -> Function {
        lua.load(format!(
            "local s = require('system') return function() for _ = 1, 1000 do local a, b = {call} end end"
        ))
        .eval()
        .unwrap()
    };
    let (pid, hostname, count, empty) =
        (lua_loop("s.pid()"), lua_loop("s.hostname()"), lua_loop("collectgarbage('count')"), lua_loop("nil, nil"));
    let mut group = c.benchmark_group("per 1000 calls");
    group.bench_function("getpid(2), bare", |b| {
        b.iter(|| (0..1000).map(|_| rustix::process::getpid().as_raw_nonzero().get()).sum::<i32>())
    });
    group.bench_function("system.pid()", |b| b.iter(|| pid.call::<()>(()).unwrap()));
    group.bench_function("uname(2), bare", |b| {
        b.iter(|| (0..1000).map(|_| rustix::system::uname().nodename().to_bytes().len()).sum::<usize>())
    });
    group.bench_function("system.hostname()", |b| b.iter(|| hostname.call::<()>(()).unwrap()));
    group.bench_function("collectgarbage('count')", |b| b.iter(|| count.call::<()>(()).unwrap()));
    group.bench_function("empty Lua loop", |b| b.iter(|| empty.call::<()>(()).unwrap()));
    group.finish();
}

criterion_group!(benches, host);
criterion_main!(benches);
