//! The heap profiler through the Rust API and scripts: what it attributes where, at rate 1
//! (every allocation: exact) and at Go's default rate; coroutines; resized blocks; stacks Lua
//! moves while the profiler reads them; the script functions' contract.

use lua_system::heap_profile::{HeapProfile, View};
use lua_system::{SystemLua, heap_profile, set_heap_profile_rate};

const OLD_NAMES: bool = cfg!(any(feature = "lua51", feature = "luajit"));

fn state() -> SystemLua {
    // SAFETY: no test keeps a clone of the `Lua` beyond the `SystemLua`.
    unsafe { SystemLua::unsafe_new().unwrap() }
}

/// The `view` total of the samples whose stack holds a frame named `function`.
fn under(profile: &HeapProfile, function: &str, view: View) -> i64 {
    profile
        .samples
        .iter()
        .filter(|sample| sample.stack.iter().any(|frame| frame.function == function))
        .map(|sample| profile.scaled(sample).get(view))
        .sum()
}

fn inuse_under(profile: &HeapProfile, function: &str) -> i64 {
    under(profile, function, View::InuseSpace)
}

fn alloc_under(profile: &HeapProfile, function: &str) -> i64 {
    under(profile, function, View::AllocSpace)
}

/// At rate 1 every allocation is recorded: the bytes a kept structure holds are exactly what
/// `allocated()` says it added (after full collections), and a dropped one holds nothing.
#[test]
fn at_rate_one_in_use_bytes_are_exact() {
    let lua = state();
    assert_eq!(set_heap_profile_rate(&lua, 1).unwrap(), 0);
    let (kept, dropped): (i64, i64) = lua
        .load(
            r#"
            local system = require("system")
            local function keepme(n)
              local t = {}
              for i = 1, n do t[i] = { string.rep("k", 100 + i % 50), i } end
              return t
            end
            local function dropme(n)
              local t = {}
              for i = 1, n do t[i] = string.rep("d", 200) .. i end
              return t
            end
            collectgarbage() collectgarbage()
            local before = system.allocated()
            KEPT = keepme(20000)
            collectgarbage() collectgarbage()
            local kept = system.allocated() - before
            local gone = dropme(20000)
            gone = nil
            collectgarbage() collectgarbage()
            return kept, system.allocated() - before - kept
            "#,
        )
        .eval()
        .unwrap();
    let profile = heap_profile(&lua).unwrap();
    let attributed = inuse_under(&profile, "keepme");
    assert!(kept > 2_000_000, "{kept}");
    assert!(
        (attributed - kept).abs() as f64 <= kept as f64 * 0.01,
        "keepme holds {attributed} bytes in the profile, {kept} by allocated()"
    );
    assert_eq!(inuse_under(&profile, "dropme"), 0, "everything dropme made was freed ({dropped} bytes moved)");
    assert!(alloc_under(&profile, "dropme") > 20000 * 200, "but it was allocated");
}

/// Frames are named as Lua's traceback names them; C functions by their library name where the
/// version lets the frame's function be identified (5.2 and later).
#[test]
fn frames_are_named_as_tracebacks_name_them() {
    let lua = state();
    set_heap_profile_rate(&lua, 1).unwrap();
    lua.load(
        r#"
        local function alpha() local s = string.rep("a", 5000) return s end
        S = alpha()
        T = (function() return { 1, 2, 3 } end)()
        "#,
    )
    .set_name("=names.lua")
    .exec()
    .unwrap();
    let profile = heap_profile(&lua).unwrap();
    let rep = if OLD_NAMES { "rep" } else { "string.rep" };
    let stack = profile
        .samples
        .iter()
        .map(|sample| &sample.stack)
        .find(|stack| stack.iter().any(|frame| frame.function == "alpha"))
        .unwrap_or_else(|| panic!("no sample under alpha: {:#?}", profile.samples));
    let at = stack.iter().position(|frame| frame.function == "alpha").unwrap();
    // LuaJIT runs `string.rep` as a fast function, without a frame of its own.
    if !cfg!(feature = "luajit") {
        assert_eq!((stack[0].function.as_str(), stack[0].file.as_str()), (rep, "[C]"), "{stack:#?}");
    }
    assert_eq!((stack[at].file.as_str(), stack[at].line), ("names.lua", 2));
    assert_eq!(stack[at + 1].function, "main chunk");
    assert!(
        profile
            .samples
            .iter()
            .any(|sample| sample.stack.first().is_some_and(|frame| frame.function == "function <names.lua:4>")),
        "an anonymous function: {:#?}",
        profile.samples
    );
}

/// Lua 5.2 and later tell the allocator the type of each new object.
#[test]
fn samples_carry_the_object_type() {
    let lua = state();
    set_heap_profile_rate(&lua, 1).unwrap();
    lua.load("local function make() return {}, string.rep('s', 100), function() return 1 end, coroutine.create(function() end) end A, B, C, D = make()")
        .exec()
        .unwrap();
    let profile = heap_profile(&lua).unwrap();
    let types: std::collections::BTreeSet<&str> = profile
        .samples
        .iter()
        .filter(|sample| sample.stack.iter().any(|frame| frame.function == "make"))
        .map(|sample| sample.object_type)
        .collect();
    if OLD_NAMES {
        assert_eq!(types.into_iter().collect::<Vec<_>>(), ["unknown"]);
    } else {
        for expected in ["table", "string", "function", "thread"] {
            assert!(types.contains(expected), "{expected} in {types:?}");
        }
    }
}

/// An allocation inside a coroutine is attributed to the coroutine's own stack, resumed with
/// `coroutine.resume` or through `coroutine.wrap`. (A coroutine's body has no caller to name
/// it: Lua's traceback calls it `function <co.lua:2>`.)
#[test]
fn coroutines_allocate_on_their_own_stacks() {
    let lua = state();
    set_heap_profile_rate(&lua, 1).unwrap();
    lua.load(
        r#"
        local function body() for i = 1, 100 do KEEP = string.rep("c", 1000) .. i; coroutine.yield() end end
        local function wrapped() for i = 1, 100 do KEEP2 = string.rep("w", 1000) .. i; coroutine.yield() end end
        local co = coroutine.create(body)
        local gen = coroutine.wrap(wrapped)
        for i = 1, 100 do assert(coroutine.resume(co)); gen() end
        "#,
    )
    .set_name("=co.lua")
    .exec()
    .unwrap();
    let profile = heap_profile(&lua).unwrap();
    for function in ["function <co.lua:2>", "function <co.lua:3>"] {
        let stacks: Vec<_> = profile
            .samples
            .iter()
            .filter(|sample| sample.stack.iter().any(|frame| frame.function == function))
            .map(|sample| &sample.stack)
            .collect();
        assert!(inuse_under(&profile, function) > 0 && alloc_under(&profile, function) > 100 * 1000);
        for stack in stacks {
            assert_eq!(stack.last().unwrap().function, function, "the coroutine's own stack: {stack:#?}");
        }
    }
}

/// What scripts see of coroutines is the same with the profiler on: results, errors (with the
/// position `wrap` adds), bad arguments.
#[test]
fn coroutines_behave_the_same_with_the_profiler() {
    let script = r##"
        local out = {}
        local function add(...) for i = 1, select("#", ...) do out[#out + 1] = tostring((select(i, ...))) end end
        add(coroutine.resume(coroutine.create(function(a, b) coroutine.yield(a + b) return "done" end), 1, 2))
        add(coroutine.resume(coroutine.create(function() error("inside") end)))
        add(coroutine.resume(coroutine.create(function() error({}) end)) )
        add(pcall(coroutine.wrap(function() error("wrapped") end)))
        local gen = coroutine.wrap(function() error("direct") end)
        add(pcall(function() gen() end))
        add(pcall(coroutine.wrap(function() error(42) end)))
        add(pcall(coroutine.resume, 42))
        add(pcall(coroutine.resume))
        add(pcall(coroutine.wrap, 42))
        add(pcall(coroutine.create, 42))
        add(select("#", pcall(coroutine.wrap, print))) -- 5.1 wants a Lua function: 2 values either way
        local done = coroutine.create(function() end)
        coroutine.resume(done)
        add(coroutine.resume(done))
        local g = coroutine.wrap(function(...) local a = { ... } while true do a = { coroutine.yield(#a) } end end)
        add(g(1, 2, 3), g(), g(nil, nil))
        return table.concat(out, "|"):gsub("table: 0x%x+", "table"):gsub("function: 0x%x+", "function")
    "##;
    let run = |profiled: bool| -> String {
        let lua = state();
        if profiled {
            set_heap_profile_rate(&lua, 1).unwrap();
        }
        lua.load(script).set_name("=co.lua").eval().unwrap()
    };
    let plain = run(false);
    assert!(plain.contains("co.lua:8: direct"), "{plain}");
    assert_eq!(run(true), plain);
}

/// Lua 5.4 and 5.5 turn a thread's stack pointers into offsets while they move its stack: an
/// allocation sampled then must not be walked. Recursion at rate 1 makes Lua move stacks
/// (growing from 40 slots to over 1,600, and shrinking in collections) again and again, in the
/// main thread and in coroutines. (Small enough for valgrind: `scripts/valgrind-tests`.)
#[test]
fn stacks_moved_while_sampled_are_safe() {
    let lua = state();
    set_heap_profile_rate(&lua, 1).unwrap();
    let depth: i64 = lua
        .load(
            r#"
            local function deep(n) if n == 0 then return 0 end local t = { n } return 1 + deep(n - 1) + #t - 1 end
            local total = 0
            for round = 1, 3 do
              total = total + deep(400)
              local co = coroutine.wrap(function() return deep(400) end)
              total = total + co()
              collectgarbage()
            end
            return total
            "#,
        )
        .eval()
        .unwrap();
    assert_eq!(depth, 6 * 400);
    let profile = heap_profile(&lua).unwrap();
    assert!(inuse_under(&profile, "deep") >= 0 && alloc_under(&profile, "deep") > 0);
}

/// Go's default rate samples a fraction; turning the rate to 0 stops sampling but keeps
/// frees of what was sampled exact; the previous rate is returned each time.
#[test]
fn the_rate_can_change_and_stop() {
    let lua = state();
    assert_eq!(set_heap_profile_rate(&lua, lua_system::DEFAULT_HEAP_PROFILE_RATE).unwrap(), 0);
    lua.load("X = {} for i = 1, 20000 do X[i] = string.rep('x', 500) .. i end").exec().unwrap();
    assert_eq!(set_heap_profile_rate(&lua, 0).unwrap(), lua_system::DEFAULT_HEAP_PROFILE_RATE);
    let before = heap_profile(&lua).unwrap();
    let sampled: u64 = before.samples.iter().map(|s| s.alloc_objects).sum();
    assert!(sampled > 0, "about 20 samples in 10 MB");
    lua.load(
        "Y = {} for i = 1, 20000 do Y[i] = string.rep('y', 500) .. i end X = nil collectgarbage() collectgarbage()",
    )
    .exec()
    .unwrap();
    let after = heap_profile(&lua).unwrap();
    assert_eq!(after.samples.iter().map(|s| s.alloc_objects).sum::<u64>(), sampled, "nothing new is sampled");
    assert!(after.total(View::InuseSpace) < before.total(View::InuseSpace) / 2, "X's strings were freed");
}

/// The script functions: `set_heap_profile_rate` returns the previous rate, `write_heap_profile`
/// writes each format; both refuse bad input with `nil, message`; the observe profile denies both.
#[test]
fn script_functions_follow_the_module_conventions() {
    let lua = state();
    let dir = std::env::temp_dir().join(format!("lua-system-heap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    lua.globals().set("DIR", dir.to_str().unwrap()).unwrap();
    lua.load(
        r#"
        local system = require("system")
        local function fails(f, arg, pattern)
          local value, message = f(arg)
          assert(value == nil and type(message) == "string" and message:find(pattern, 1, true), tostring(message))
        end
        assert(system.set_heap_profile_rate(1) == 0)
        assert(system.set_heap_profile_rate(1024) == 1)
        for _, bad in ipairs({ -1, 1.5, 0/0, math.huge, -math.huge, "x", {}, true }) do
          fails(system.set_heap_profile_rate, bad, "bad argument #1 to 'set_heap_profile_rate'")
        end
        fails(system.set_heap_profile_rate, nil, "bad argument #1 to 'set_heap_profile_rate'")
        assert(system.set_heap_profile_rate(2^62) == 1024, "unchanged by the bad calls")
        system.set_heap_profile_rate(1)
        local keep = {} for i = 1, 1000 do keep[i] = { i } end
        for _, name in ipairs({ "p.pb.gz", "p.pprof", "p.folded", "p.svg" }) do
          local ok, err = system.write_heap_profile(DIR .. "/" .. name)
          assert(ok == true and err == nil, tostring(err))
        end
        fails(system.write_heap_profile, DIR .. "/p.txt", "write_heap_profile: cannot tell the heap profile format")
        fails(system.write_heap_profile, "/nonexistent/dir/p.svg", "write_heap_profile: ")
        for _, bad in ipairs({ 42, {}, true, "" }) do
          fails(system.write_heap_profile, bad, "bad argument #1 to 'write_heap_profile'")
        end
        fails(system.write_heap_profile, nil, "bad argument #1 to 'write_heap_profile' (string expected, got nil)")
        "#,
    )
    .exec()
    .unwrap();
    for name in ["p.pb.gz", "p.pprof", "p.folded", "p.svg"] {
        assert!(std::fs::metadata(dir.join(name)).unwrap().len() > 100, "{name}");
    }
    let folded = std::fs::read_to_string(dir.join("p.folded")).unwrap();
    assert!(folded.lines().all(|line| line.rsplit_once(' ').unwrap().1.parse::<u64>().is_ok()));
    lua_system::set_permissions(&lua, lua_system::Permissions::profile(lua_system::Profile::Observe)).unwrap();
    lua.load(
        r#"
        local system = require("system")
        assert(select(2, system.set_heap_profile_rate(0)) == "permission denied: system.set_heap_profile_rate")
        assert(select(2, system.write_heap_profile(DIR .. "/q.svg")) == "permission denied: system.write_heap_profile")
        "#,
    )
    .exec()
    .unwrap();
    assert!(!dir.join("q.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What a hostile review found, each now a test (run under valgrind too: `scripts/valgrind-tests`):
/// a coroutine recorded as running must stay alive even when a script replaces the wrappers'
/// upvalues; starting from a coroutine must not take it for the main thread; a registry with a
/// metatable must neither deadlock nor raise; a stop before the first start must not keep the
/// profiler from starting; a profile keeps the rate its samples were taken at; frame names are
/// bounded.
#[test]
fn hostile_scripts_cannot_break_the_profiler() {
    let lua = state();
    lua.load(
        r#"
        local system = require("system")
        -- A stop first, then a start: the start still happens.
        assert(system.set_heap_profile_rate(0) == 0)
        local co = coroutine.create(function() return system.set_heap_profile_rate(1) end)
        local ok, previous, message = coroutine.resume(co)
        assert(ok)
        if jit or _VERSION == "Lua 5.1" then
          assert(previous == nil and message:find("main thread", 1, true), tostring(message))
          assert(system.set_heap_profile_rate(1) == 0)
        else
          assert(previous == 0, tostring(message))
        end
        co = nil
        collectgarbage() collectgarbage()
        local t = {} for i = 1, 200 do t[i] = { i } end
        -- The wrappers' upvalues replaced: the recorded coroutine is still held by the wrapper.
        debug.setupvalue(coroutine.resume, 1, function(c)
          c = nil
          collectgarbage() collectgarbage()
          local u = {} for i = 1, 200 do u[i] = { i, tostring(i) } end
          return true
        end)
        assert(coroutine.resume(coroutine.create(function() end)))
        local gen = coroutine.wrap(function() end)
        debug.setupvalue(gen, 1, function()
          debug.setupvalue(gen, 2, nil)
          collectgarbage() collectgarbage()
          local u = {} for i = 1, 200 do u[i] = { i, tostring(i) } end
        end)
        gen()
        -- Frame names are bounded, whatever a call site calls a function.
        local long = string.rep("n", 100000)
        local f = assert((loadstring or load)(("local t = {} function t.%s() return {} end return t.%s"):format(long, long), "=x"))()
        KEEP = f()
        "#,
    )
    .exec()
    .unwrap();
    let profile = heap_profile(&lua).unwrap();
    assert!(profile.samples.iter().flat_map(|s| &s.stack).all(|frame| frame.function.len() <= 260));
    assert!(profile.samples.iter().any(|s| s.alloc_objects > 0));

    // A registry whose reads run a script (a metatable on it): the profiler reads it raw.
    let lua = state();
    lua.load(
        r#"
        local system = require("system")
        local registry = debug.getregistry()
        debug.setmetatable(registry, { __index = function() local j = {} for i = 1, 10 do j[i] = {} end return {} end })
        assert(system.set_heap_profile_rate(1) == 0)
        assert(system.set_heap_profile_rate(1) == 1)
        "#,
    )
    .exec()
    .unwrap();

    // Stopped: the samples keep the rate they were taken at.
    let lua = state();
    set_heap_profile_rate(&lua, 4096).unwrap();
    lua.load("KEEP = {} for i = 1, 2000 do KEEP[i] = string.rep('k', 100) .. i end").exec().unwrap();
    let before = heap_profile(&lua).unwrap();
    set_heap_profile_rate(&lua, 0).unwrap();
    let after = heap_profile(&lua).unwrap();
    assert_eq!((before.rate, after.rate), (4096, 4096));
    assert_eq!(before.total(View::InuseSpace), after.total(View::InuseSpace));
}

/// A memory error through a `coroutine.wrap` function stays "not enough memory", without a
/// position, as the library's own wrap leaves it.
#[test]
fn a_memory_error_through_wrap_keeps_its_message() {
    let script = "local gen = coroutine.wrap(function() local t = {} for i = 1, 1e8 do t[i] = i end end)
                  local ok, message = pcall(function() gen() end) return message";
    let run = |profiled: bool| -> String {
        let lua = state();
        if profiled {
            set_heap_profile_rate(&lua, lua_system::DEFAULT_HEAP_PROFILE_RATE).unwrap();
        }
        lua.set_memory_limit(8 << 20).unwrap();
        lua.load(script).eval().unwrap()
    };
    assert_eq!(run(true), run(false));
}
