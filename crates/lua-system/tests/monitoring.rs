//! Watching a state from Rust: the cycle hook, the probe a sampler thread reads, and the
//! figures as `Metrics` (serde, Prometheus).

use std::sync::{Arc, Mutex};

use lua_system::mlua::Lua;
use lua_system::{Cycle, SystemLua};

/// A state whose every block is counted (the safe constructor counts blocks made since the
/// state's creation in Lua 5.1 and LuaJIT: docs/rust.md).
fn exact() -> SystemLua {
    // SAFETY: no test keeps a clone of the `Lua` beyond the `SystemLua`.
    unsafe { SystemLua::unsafe_new().unwrap() }
}

/// Installs a hook that records every cycle; returns the record.
fn record_cycles(lua: &SystemLua) -> Arc<Mutex<Vec<Cycle>>> {
    let cycles = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&cycles);
    lua.on_gc_cycle(Some(Box::new(move |cycle| record.lock().unwrap().push(*cycle)))).unwrap();
    cycles
}

#[test]
fn the_hook_sees_every_cycle_as_num_gc_counts_it() {
    let lua = exact();
    let before = lua.mem_stats().unwrap().num_gc;
    let cycles = record_cycles(&lua);
    lua.load("local t = {} for i = 1, 200000 do t[i] = { i } end t = nil").exec().unwrap();
    lua.load("require('system').gc()").exec().unwrap();
    let after = lua.mem_stats().unwrap().num_gc;

    let cycles = cycles.lock().unwrap().clone();
    assert_eq!(cycles.len() as u64, after - before, "one call per counted cycle");
    let numbers: Vec<u64> = cycles.iter().map(|c| c.number).collect();
    assert_eq!(numbers, (before + 1..=after).collect::<Vec<_>>());
    let last = cycles.last().unwrap();
    assert!(last.forced && last.duration.is_some(), "system.gc() is forced and timed: {last:?}");
    assert!(cycles[..cycles.len() - 1].iter().all(|c| !c.forced && c.duration.is_none()), "the rest are automatic");
    assert!(last.heap_before > 4 << 20 && last.heap_after < 1 << 20, "the dropped table is freed: {last:?}");
    assert!(cycles.windows(2).all(|w| w[0].at <= w[1].at));
}

/// The hook's `next_gc` is the threshold Lua sets when the cycle ends: what `mem_stats()` reads
/// in Lua's internals right after (`next_gc_source` "threshold"), in each of the version's
/// modes, with several percents, for automatic cycles (generational mode: minor collections,
/// and major ones, some freeing too little, after which Lua waits a pause) and forced ones.
#[test]
fn the_hooks_next_gc_is_the_threshold_lua_sets() {
    let modes: &[&str] = if cfg!(any(feature = "lua52", feature = "lua54", feature = "lua55")) {
        &["incremental", "generational"]
    } else {
        &["incremental"]
    };
    for mode in modes {
        for percent in [100, 200] {
            let lua = exact();
            if cfg!(any(feature = "lua52", feature = "lua54", feature = "lua55")) {
                lua.load(format!("collectgarbage('{mode}')")).exec().unwrap();
            }
            let cycles = record_cycles(&lua);
            // After each cycle, the first mem_stats(): "number next_gc source". The live set
            // grows for a while (major collections then free too little), then stays.
            let seen: Vec<String> = lua
                .load(format!(
                    r#"
                    local system = require("system")
                    system.set_gc_percent({percent})
                    local seen, last, keep = {{}}, system.mem_stats().num_gc, {{}}
                    for i = 1, 1000000 do
                      local s = system.mem_stats()
                      if s.num_gc ~= last then
                        seen[#seen + 1] = s.num_gc .. " " .. s.next_gc .. " " .. s.next_gc_source
                        last = s.num_gc
                        if #seen == 30 then break end
                      end
                      keep[i % 3000] = {{ i }}
                      if i % 9973 == 0 then system.gc() end
                    end
                    return seen
                    "#
                ))
                .eval()
                .unwrap();
            let cycles = cycles.lock().unwrap().clone();
            let case = format!("{mode}, percent {percent}");
            assert_eq!(seen.len(), 30, "{case}: cycles seen");
            let (mut matched, mut bad_majors) = (0, 0);
            for line in &seen {
                let [number, next_gc, source] = line.split(' ').collect::<Vec<_>>()[..] else { panic!("{line}") };
                let (number, next_gc): (u64, u64) = (number.parse().unwrap(), next_gc.parse().unwrap());
                assert_eq!(source, "threshold", "{case}: Lua's threshold is read");
                let cycle = cycles.iter().find(|c| c.number == number).unwrap();
                if cycle.next_gc == Some(next_gc) {
                    matched += 1;
                    continue;
                }
                // A threshold the heap has already reached starts the next cycle at once, which
                // mem_stats() then sees running.
                let reached = cycle.next_gc.is_some_and(|n| n <= cycle.heap_after);
                // Lua 5.4's generational mode: a major collection that frees less than half the
                // growth since the last one makes Lua wait a pause instead (a "bad" collection),
                // decided after the finalizers ran (Cycle::next_gc's documentation).
                let long_wait = *mode == "generational"
                    && cfg!(feature = "lua54")
                    && cycle.next_gc.is_some_and(|n| next_gc > n)
                    && next_gc <= cycle.heap_after * (100 + percent) / 100 + 1024;
                bad_majors += usize::from(long_wait);
                // Lua 5.2's generational mode: a major collection sets the threshold from the heap
                // again once all finalizers ran, a few hundred bytes later.
                let major_52 = *mode == "generational"
                    && cfg!(feature = "lua52")
                    && cycle.next_gc.is_some_and(|n| n.abs_diff(next_gc) <= n / 100);
                assert!(
                    reached || long_wait || major_52,
                    "{case}: cycle {number}: {cycle:?}, then next_gc {next_gc}; seen {seen:?}"
                );
            }
            assert!(matched >= 27, "{case}: {matched} of 30 cycles matched");
            assert!(bad_majors <= 2, "{case}: {bad_majors} bad major collections");
        }
    }
}

#[test]
fn a_collection_the_host_runs_is_forced_when_marked() {
    let lua = exact();
    let cycles = record_cycles(&lua);
    lua_system::mark_forced_collection(&lua, true).unwrap();
    lua.gc_collect().unwrap();
    lua_system::mark_forced_collection(&lua, false).unwrap();
    lua.gc_collect().unwrap();
    let cycles = cycles.lock().unwrap();
    let forced: Vec<bool> = cycles.iter().map(|c| c.forced).collect();
    assert_eq!(forced, [true, false]);
}

#[test]
fn forced_marks_nest() {
    let lua = exact();
    let cycles = record_cycles(&lua);
    lua_system::mark_forced_collection(&lua, true).unwrap();
    lua_system::mark_forced_collection(&lua, true).unwrap(); // a finalizer forcing one inside
    lua_system::mark_forced_collection(&lua, false).unwrap();
    lua.gc_collect().unwrap(); // still inside the outer one
    lua_system::mark_forced_collection(&lua, false).unwrap();
    lua_system::mark_forced_collection(&lua, false).unwrap(); // unpaired: ignored
    lua.gc_collect().unwrap();
    let forced: Vec<bool> = cycles.lock().unwrap().iter().map(|c| c.forced).collect();
    assert_eq!(forced, [true, false]);
}

#[test]
fn removing_the_hook_and_closing_the_state_report_nothing_more() {
    let lua = exact();
    let cycles = record_cycles(&lua);
    lua.gc_collect().unwrap();
    assert_eq!(cycles.lock().unwrap().len(), 1);
    drop(lua); // lua_close finalizes the cycle sentinel: not a cycle
    assert_eq!(cycles.lock().unwrap().len(), 1);

    let lua = exact();
    let cycles = record_cycles(&lua);
    lua.on_gc_cycle(None).unwrap();
    lua.gc_collect().unwrap();
    assert!(cycles.lock().unwrap().is_empty());
}

#[test]
fn a_probe_samples_the_state_from_another_thread_while_its_script_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::time::Duration;

    let lua = exact();
    let probe = lua.probe();
    let stop = AtomicBool::new(false);
    // The sampler runs free, every 200 µs, and also answers the script's checkpoints: a thread
    // scheduler that never lets it run beside the script (valgrind serialises threads) still
    // gets samples taken mid-script, so the test does not depend on timing.
    let (checkpoint, requests) = mpsc::channel::<()>();
    let (answer, answers) = mpsc::channel::<()>();
    let wait_for_sample = lua
        .create_function(move |_, ()| {
            checkpoint.send(()).map_err(lua_system::mlua::Error::external)?;
            answers.recv().map_err(lua_system::mlua::Error::external)
        })
        .unwrap();
    lua.globals().set("wait_for_sample", wait_for_sample).unwrap();
    let samples = std::thread::scope(|scope| {
        let (probe, stop) = (&probe, &stop);
        let sampler = scope.spawn(move || {
            let mut samples = Vec::new();
            loop {
                match requests.recv_timeout(Duration::from_micros(200)) {
                    Ok(()) => {
                        samples.push(probe.sample());
                        answer.send(()).unwrap();
                    }
                    Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => samples.push(probe.sample()),
                    Err(_) => return samples,
                }
            }
        });
        lua.load(
            "require('system').set_gc_percent(-1) live = {}
             for i = 1, 300000 do live[i] = { i } if i % 30000 == 0 then wait_for_sample() end end",
        )
        .exec()
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    });
    lua.globals().set("wait_for_sample", lua_system::mlua::Nil).unwrap();
    assert!(samples.len() >= 10, "{} samples", samples.len());
    // The collector is stopped and the live set grows: the samples climb from the start to the
    // end figure (a table's resize may briefly hold its old and new parts).
    let stats = lua.mem_stats().unwrap();
    let (first, end) = (samples[0].heap_alloc, stats.alloc);
    assert!(samples.iter().all(|s| s.heap_alloc >= first && s.heap_alloc <= end + end / 2), "{samples:?}");
    assert!(samples.iter().any(|s| s.heap_alloc > first + (end - first) / 10 && s.heap_alloc < end), "seen midway");
    assert!(samples.iter().all(|s| s.heap_objects <= stats.heap_objects));
    assert!(samples.windows(2).all(|w| w[0].seconds <= w[1].seconds));
    // Read right after mem_stats (whose call from Rust may allocate), the probe agrees with it.
    let last = probe.sample();
    assert_eq!(last.heap_alloc, stats.alloc);
    assert_eq!(last.heap_objects, stats.heap_objects);
    assert_eq!(last.num_gc, stats.num_gc);
    assert_eq!(last.next_gc, None, "no target while stopped");
    assert!(last.resident.unwrap() > last.heap_alloc);
}

// Lua 5.1 cannot say whether its collector runs (no "isrunning"): there the
// module knows only the stops made through it (README, "What is exact where").
#[cfg(not(feature = "lua51"))]
#[test]
fn a_probe_sees_a_change_the_script_made_without_the_module_once_the_host_reads_it() {
    let lua = exact();
    assert!(lua.probe().sample().next_gc.is_some());
    lua.load("collectgarbage('stop')").exec().unwrap();
    assert_eq!(lua_system::gc_percent(&lua).unwrap(), -1);
    assert_eq!(lua.probe().sample().next_gc, None);
    lua.load("collectgarbage('restart')").exec().unwrap();
    assert!(lua_system::gc_percent(&lua).unwrap() > 0);
    assert!(lua.probe().sample().next_gc.is_some());
}

#[test]
fn metrics_serialize_with_serde_and_render_as_prometheus() {
    let lua = exact();
    // A first cycle ended: otherwise one ending between the two readings below adds
    // lua_gc_last_cycle_timestamp_seconds to the second.
    lua.gc_collect().unwrap();
    let metrics = lua.mem_stats().unwrap().metrics();
    let json = serde_json::to_value(metrics).unwrap();
    assert_eq!(json["accounting"], "exact");
    assert_eq!(json["lua_heap_alloc_bytes"], metrics.get("lua_heap_alloc_bytes").unwrap());
    assert_eq!(json["lua_gc_cycles_total"], metrics.get("lua_gc_cycles_total").unwrap());
    assert_eq!(json["lua_gc_percent"], lua_system::gc_percent(&lua).unwrap() as f64, "100 (150 in Lua 5.5)");
    assert!(json["lua_process_resident_memory_bytes"].as_f64().unwrap() > 0.0);
    // Counts and bytes are integers in JSON (`365`, not `365.0`); the timestamp has a fraction.
    for name in
        ["lua_heap_alloc_bytes", "lua_heap_objects", "lua_gc_cycles_total", "lua_gc_percent", "lua_process_cpus"]
    {
        assert!(json[name].is_i64(), "{name}: {}", json[name]);
    }
    assert!(json["lua_gc_last_cycle_timestamp_seconds"].is_f64(), "{}", json["lua_gc_last_cycle_timestamp_seconds"]);

    let text = metrics.to_prometheus();
    let line = format!("\nlua_heap_alloc_bytes {}\n", metrics.get("lua_heap_alloc_bytes").unwrap());
    assert!(text.contains(&line), "{text}");
    assert!(text.contains("# TYPE lua_gc_cycles_total counter\n"));
    // The script's metrics() renders the same text from the same figures.
    let from_lua: String = lua.load("return (require('system').metrics())").eval().unwrap();
    let names = |t: &str| {
        t.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(' ').next().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(names(&from_lua), names(&text));
}

#[test]
fn metrics_of_an_interposed_state_have_every_figure() {
    let lua = Lua::new();
    lua_system::install(&lua).unwrap();
    let metrics = lua_system::mem_stats(&lua).unwrap().metrics();
    assert_eq!(metrics.accounting(), "interposed");
    assert!(metrics.get("lua_heap_alloc_bytes").is_some_and(|b| b > 0.0));
    assert!(metrics.get("lua_heap_objects").is_some());
    assert!(metrics.get("lua_heap_allocated_bytes_total").is_some());
    let text = metrics.to_prometheus();
    assert!(text.contains("lua_heap_objects "), "{text}");
}

#[test]
fn labelled_metrics_escape_values_and_refuse_bad_names() {
    let lua = exact();
    let metrics = lua.mem_stats().unwrap().metrics();
    let text = metrics.to_prometheus_with_labels(&[("state", "a \"quoted\" \\ name\nend"), ("pool", "p1")]).unwrap();
    let expected = format!(
        "\nlua_heap_alloc_bytes{{state=\"a \\\"quoted\\\" \\\\ name\\nend\",pool=\"p1\"}} {}\n",
        metrics.get("lua_heap_alloc_bytes").unwrap()
    );
    assert!(text.contains(&expected), "{text}");
    let samples = text.lines().filter(|l| !l.starts_with('#'));
    assert!(samples.clone().count() >= 10);
    assert!(samples.clone().all(|l| l.contains("{state=")), "every sample is labelled");
    assert_eq!(metrics.to_prometheus_with_labels(&[]).unwrap(), metrics.to_prometheus());
    for bad in ["", "1state", "state-name", "__reserved", "é"] {
        assert_eq!(metrics.to_prometheus_with_labels(&[(bad, "x")]), Err(lua_system::InvalidLabel(bad.to_owned())));
    }
}

#[test]
fn the_hook_can_be_set_and_removed_while_lua_runs_without_losing_a_byte() {
    let lua = exact();
    let cycles = Arc::new(Mutex::new(Vec::new()));
    lua.scope(|scope| {
        // Toggling the hook switches the state's allocator function between two allocations,
        // from inside a running script: blocks made by either are freed or resized by the other.
        let toggle = scope.create_function(|_, on: bool| {
            let record = Arc::clone(&cycles);
            lua.on_gc_cycle(on.then(|| Box::new(move |cycle: &Cycle| record.lock().unwrap().push(*cycle)) as _))
        })?;
        lua.globals().set("toggle", toggle)?;
        lua.load(
            r#"
            local keep = {}
            for round = 1, 40 do
              toggle(round % 2 == 1)
              local t = {}
              for i = 1, 2000 do t[i] = string.rep("x", i % 50) .. i end
              keep[round % 5] = t
              if round % 4 == 1 then collectgarbage() end
            end
            toggle(false)
            "#,
        )
        .exec()
    })
    .unwrap();
    let cycles = cycles.lock().unwrap();
    assert!(cycles.len() >= 10, "cycles seen while the hook was on: {}", cycles.len());
    assert!(cycles.iter().all(|c| c.heap_before >= c.heap_after), "{cycles:?}");
    let (ours, luas): (i64, f64) =
        lua.load("return require('system').allocated(), collectgarbage('count')").eval().unwrap();
    assert!((ours as f64 - luas * 1024.0).abs() < 1.0, "the accounts still match Lua's: {ours} vs {}", luas * 1024.0);
}

#[test]
fn several_states_share_one_exposition_each_family_once() {
    let (a, b) = (exact(), exact());
    b.load("big = {} for i = 1, 10000 do big[i] = { i } end").exec().unwrap();
    let (ma, mb) = (a.mem_stats().unwrap().metrics(), b.mem_stats().unwrap().metrics());
    let text = lua_system::Metrics::to_prometheus_many(&[(&[("state", "a")], &ma), (&[("state", "b")], &mb)]).unwrap();
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(types.len(), unique.len(), "each family once:\n{text}");
    assert!(
        text.contains(&format!("lua_heap_alloc_bytes{{state=\"a\"}} {}\n", ma.get("lua_heap_alloc_bytes").unwrap()))
    );
    assert!(
        text.contains(&format!("lua_heap_alloc_bytes{{state=\"b\"}} {}\n", mb.get("lua_heap_alloc_bytes").unwrap()))
    );
    // Each family's samples follow its TYPE line: one per state that has the figure (a state
    // without a cycle yet has no last-cycle time) for the states' figures, one for the
    // process's, without the states' labels.
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let count = |m: &lua_system::Metrics| {
        m.iter().filter(|(name, _)| name.starts_with("lua_heap") || name.starts_with("lua_gc")).count()
    };
    let process = ma.iter().filter(|(name, _)| name.starts_with("lua_process") || *name == "lua_max_procs").count();
    assert_eq!(samples.len(), count(&ma) + count(&mb) + process, "{text}");
    assert!(samples.iter().any(|l| l.starts_with("lua_process_resident_memory_bytes ")), "{text}");
    assert_eq!(lua_system::Metrics::to_prometheus_many(&[]).unwrap(), "");
}
