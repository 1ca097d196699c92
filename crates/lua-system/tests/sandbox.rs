//! `lua_system::sandbox`, the CPU budget and `collectgarbage` under permissions, through the
//! Rust API and the scripts a hostile user would write (SECURITY.md's claims, one by one).

use std::time::{Duration, Instant};

use lua_system::mlua::{self, Lua, StdLib};
use lua_system::{Permissions, Profile, SystemLua};

/// A state as a host embedding untrusted code makes it: every library the runner opens, then
/// the sandbox.
fn sandboxed() -> SystemLua {
    // SAFETY: the state is dropped before anything it could have touched; no clone is kept.
    let lua = unsafe { SystemLua::unsafe_new().unwrap() };
    lua_system::sandbox(&lua).unwrap();
    lua
}

fn eval<T: mlua::FromLuaMulti>(lua: &Lua, code: &str) -> T {
    lua.load(code).eval().unwrap_or_else(|e| panic!("{code}: {e}"))
}

#[test]
fn the_sandbox_leaves_no_way_to_the_file_system_processes_or_native_code() {
    let lua = sandboxed();
    let absent = [
        "io",
        "debug",
        "dofile",
        "loadfile",
        "string.dump",
        "os.execute",
        "os.exit",
        "os.getenv",
        "os.remove",
        "os.rename",
        "os.tmpname",
        "os.setlocale",
        "package.loadlib",
        "package.searchpath",
        "ffi",
        "jit",
    ];
    for path in absent {
        let found: bool =
            eval(&lua, &format!("local ok, v = pcall(function() return {path} end) return ok and v ~= nil"));
        assert!(!found, "{path} is reachable");
    }
    for path in ["os.clock", "os.time", "os.date", "os.difftime", "string.rep", "table.concat", "math.floor"] {
        let found: bool = eval(&lua, &format!("return {path} ~= nil"));
        assert!(found, "{path} is missing");
    }
    // require: the module the host gave, nothing from disk, no C module, no FFI.
    assert!(eval::<bool>(&lua, "return type(require('system').mem_stats) == 'function'"));
    for module in ["io", "debug", "ffi", "jit.util", "os.nope", "cjson", "lpeg", "socket.core"] {
        let (ok, err): (bool, String) =
            eval(&lua, &format!("local ok, e = pcall(require, '{module}') return ok, tostring(e)"));
        assert!(!ok, "require('{module}') worked");
        assert!(err.contains(module), "{err}");
    }
}

#[test]
fn the_sandbox_loads_text_only() {
    let lua = sandboxed();
    assert_eq!(eval::<i64>(&lua, "return load('return 1 + 1')()"), 2);
    if !cfg!(any(feature = "lua51", feature = "luajit")) {
        assert_eq!(eval::<i64>(&lua, "local env = { x = 5 } return load('return x', 'c', 't', env)()"), 5);
    }
    let parts: i64 =
        eval(&lua, "local p = { 'return ', '4' } local i = 0 return load(function() i = i + 1 return p[i] end)()");
    assert_eq!(parts, 4);
    // A binary chunk, made where string.dump exists, is refused in every form.
    let plain = Lua::new();
    let binary: mlua::LuaString = plain.load("return string.dump(function() return 42 end)").eval().unwrap();
    lua.globals().set("binary", lua.create_string(binary.as_bytes()).unwrap()).unwrap();
    for call in ["load(binary)", "load(binary, 'b', 'b')", "load(binary, 'b', 'bt')", "(loadstring or load)(binary)"] {
        let (f, err): (Option<mlua::Function>, Option<String>) = eval(&lua, &format!("return {call}"));
        assert!(f.is_none(), "{call} loaded a binary chunk");
        assert!(err.unwrap_or_default().contains("binary"), "{call}");
    }
}

#[test]
fn the_sandbox_denies_the_host_and_the_collector_to_scripts() {
    let lua = sandboxed();
    let (pid, err): (Option<i64>, String) = eval(&lua, "return require('system').pid()");
    assert_eq!((pid, err.as_str()), (None, "permission denied: system.pid"));
    let answers: (Option<i64>, String, bool) =
        eval(&lua, "local r, e = collectgarbage('stop') return r, e, require('system').get_gc_percent() >= 0");
    assert_eq!(answers, (None, "permission denied: collectgarbage(\"stop\")".into(), true));
    let (r, e): (Option<i64>, String) = eval(&lua, "return collectgarbage()");
    assert_eq!((r, e.as_str()), (None, "permission denied: collectgarbage(\"collect\")"));
    assert!(eval::<f64>(&lua, "return collectgarbage('count')") > 0.0, "reading stays allowed");
    let bad: String = eval(&lua, "local ok, e = pcall(collectgarbage, 'bogus') return tostring(e)");
    assert!(bad.contains("invalid option"), "{bad}");
}

#[test]
fn observe_gates_collectgarbage_and_full_keeps_lua_s_own() {
    for (profile, gated) in [(Profile::Full, false), (Profile::Observe, true)] {
        let lua = SystemLua::new().unwrap();
        lua_system::set_permissions(&lua, Permissions::profile(profile)).unwrap();
        for option in ["'stop'", "'setpause', 1000", "'setstepmul', 1000", "'generational'", "'incremental'"] {
            let (first, running): (mlua::Value, bool) = eval(
                &lua,
                &format!(
                    "local ok, r = pcall(collectgarbage, {option}) local running = require('system').get_gc_percent() >= 0 collectgarbage('restart') return r, running"
                ),
            );
            if gated {
                assert!(first.is_nil() && running, "{profile:?}: collectgarbage({option}) changed the collector");
            }
        }
        let stopped: bool = eval(
            &lua,
            "collectgarbage('stop') local r = require('system').get_gc_percent() < 0 collectgarbage('restart') return r",
        );
        // Lua 5.1 has no 'isrunning' option.
        if !cfg!(any(feature = "lua51", feature = "luajit")) {
            assert_eq!(stopped, !gated, "{profile:?}");
        }
    }
}

#[test]
fn mlua_s_safe_constructor_keeps_c_modules_out() {
    let lua = SystemLua::new().unwrap();
    let (ok, err): (bool, String) =
        eval(&lua, "local ok, e = pcall(package.loadlib, 'libc.so.6', '*') return ok, tostring(e)");
    assert!(!ok || err.contains("disabled"), "package.loadlib: {err}");
    let (ok, err): (bool, String) = eval(&lua, "local ok, e = pcall(require, 'cjson') return ok, tostring(e)");
    assert!(!ok && err.contains("C modules"), "the C searcher: {err}");
    assert!(eval::<bool>(&lua, "return debug == nil"));
    let _ = StdLib::ALL_SAFE;
}

#[test]
fn the_sandbox_has_a_memory_limit_a_script_cannot_escape() {
    let lua = sandboxed();
    assert_eq!(lua_system::memory_limit(&lua).unwrap(), Some(lua_system::SANDBOX_MEMORY_LIMIT));
    let bombs = [
        "local t = {} for i = 1, 1e9 do t[i] = i end",
        "local s = 'x' while true do s = s .. s end",
        "return string.rep('x', 2^30)",
        "local t = {} for i = 1, 1e9 do t[i] = coroutine.create(function() end) end",
        "local t = {} for i = 1, 1e5 do t[i] = ('x'):rep(1000) .. i end return table.concat(t)",
    ];
    for bomb in bombs {
        lua_system::set_cpu_limit(&lua, Some(Duration::from_secs(60))).unwrap();
        let err = lua.load(bomb).exec().unwrap_err().to_string();
        assert!(err.contains("not enough memory") || err.contains("too large"), "{bomb}: {err}");
        assert!(lua.used_memory() <= lua_system::SANDBOX_MEMORY_LIMIT, "{bomb}");
        // The host collects the bomb's garbage: Lua 5.1 does not by itself, and mlua's call
        // needs memory there, so the limit is lifted meanwhile.
        let limit = lua_system::set_memory_limit(&lua, None).unwrap();
        lua.gc_collect().unwrap();
        lua_system::set_memory_limit(&lua, limit).unwrap();
    }
    // The limit holds and the state still works.
    assert_eq!(eval::<i64>(&lua, "return 6 * 7"), 42);
}

/// At the limit, what the sandbox's functions raise is what Lua's own raise: the string "not
/// enough memory", never an mlua error object (a userdata a script cannot print, which the
/// runner once reported as `(error object is not a string)`). Every global function the sandbox
/// stands in for or wraps is called from a heap filled to the limit.
#[test]
fn at_the_memory_limit_every_caught_error_is_a_string() {
    let lua = sandboxed();
    // Thirty fills of the heap take longer than the sandbox's CPU budget under valgrind.
    lua_system::set_cpu_limit(&lua, None).unwrap();
    let calls = [
        "collectgarbage()",
        "collectgarbage('count')",
        "collectgarbage('step')",
        "collectgarbage('bogus')",
        "pcall(error)",
        "xpcall(error, print)",
        "load('return 1')",
        "setmetatable({}, {})",
        "tostring({})",
        "string.rep('x', 64) .. 'y'",
    ];
    let mut odd = Vec::new();
    for call in calls {
        for _ in 0..3 {
            // The call's function and the results' holder are made before the heap is full.
            let code = format!(
                "local f = function() return {call} end local t, k = {{}}, 0 \
                 pcall(function() while true do k = k + 1; t[k] = {{}} end end) \
                 local _, e = pcall(f) t = nil return type(e)"
            );
            let limit = lua_system::set_memory_limit(&lua, Some(4 << 20)).unwrap();
            let kind: mlua::Result<String> = lua.load(&code).eval();
            // Lua 5.1 does not collect by itself at a refused allocation: the host does, with
            // the limit lifted (mlua's call needs memory).
            lua_system::set_memory_limit(&lua, limit).unwrap();
            lua.gc_collect().unwrap();
            match &kind {
                Ok(kind) if ["string", "number", "nil", "table", "boolean", "function"].contains(&kind.as_str()) => {}
                // Lua 5.1 makes the string "not enough memory" when `pcall` returns it, which
                // may itself fail, past the `pcall`: Lua's own error reaches the host.
                Err(mlua::Error::MemoryError(_)) if cfg!(any(feature = "lua51", feature = "luajit")) => {}
                other => odd.push(format!("{call}: {other:?}")),
            }
        }
    }
    assert!(odd.is_empty(), "calls whose error at the limit was not a string: {odd:#?}");
}

/// Runs `code` in a state with a CPU budget of 0.3 s; returns the error and the CPU time used.
fn run_to_the_budget(code: &str) -> (String, Duration) {
    let lua = sandboxed();
    lua_system::set_cpu_limit(&lua, Some(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let err = lua.load(code).exec().unwrap_err().to_string();
    let used = lua_system::cpu_used(&lua).unwrap();
    println!("{code}: {used:?} of CPU, {:?} of wall time", started.elapsed());
    (err, used)
}

#[test]
fn a_cpu_budget_stops_loops_that_catch_errors_and_hide_in_coroutines() {
    let hogs = [
        "while true do end",
        "while true do xpcall(function() while true do end end, function() while true do end end) end",
        "while true do pcall(function() while true do end end) end",
        "local function f() return pcall(f) end while true do f() end",
        "coroutine.wrap(function() while true do pcall(function() while true do end end) end end)()",
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        "local t = setmetatable({}, { __index = function(t, k) return t[k + 1] end }) while true do pcall(function() return t[1] end) end",
        "while true do pcall(string.gsub, ('x'):rep(1000), '.', function() while true do end end) end",
        "local t = {} for i = 1, 1000 do t[i] = i end while true do pcall(table.sort, t, function(a, b) while true do end end) end",
    ];
    for hog in hogs {
        // Lua 5.1 itself, built with its API checks, asserts on unbounded pcall recursion
        // (lua_pushboolean after the C stack overflow), budget or not.
        if cfg!(feature = "lua51") && hog.contains("pcall(f)") {
            continue;
        }
        let (err, used) = run_to_the_budget(hog);
        assert!(err.contains("CPU limit exceeded"), "{hog}: {err}");
        assert!(used >= Duration::from_millis(300), "{hog}: stopped after {used:?}");
    }
}

#[test]
fn a_spent_budget_stops_the_main_thread_after_a_coroutine_died_of_it() {
    let lua = sandboxed();
    lua_system::set_cpu_limit(&lua, Some(Duration::from_millis(200))).unwrap();
    let code = "local co = coroutine.create(function() while true do end end) \
                local ok, err = coroutine.resume(co) return 'went on after: ' .. tostring(err)";
    let err = lua.load(code).exec().unwrap_err().to_string();
    assert!(err.contains("CPU limit exceeded"), "{err}");
    assert!(lua_system::cpu_limit_exceeded(&lua).unwrap().is_some());
    // Closing a coroutine that died of it does not run its __close handlers (Lua 5.4 on).
    if cfg!(any(feature = "lua54", feature = "lua55")) {
        let lua = sandboxed();
        lua_system::set_cpu_limit(&lua, Some(Duration::from_millis(200))).unwrap();
        let code = "local f = coroutine.wrap(function() \
                      local g <close> = setmetatable({}, { __close = function() while true do end end }) \
                      while true do end end) \
                    local ok, err = pcall(f) return ok, err";
        // Were the handler run, it would loop forever with hooks off.
        let err = lua.load(code).exec().unwrap_err().to_string();
        assert!(err.contains("CPU limit exceeded"), "{err}");
        // A chunk that ends in a tail call runs no instruction of its own after catching the
        // error: the call returns normally, and the host asks whether the budget was spent.
        let lua = sandboxed();
        lua_system::set_cpu_limit(&lua, Some(Duration::from_millis(200))).unwrap();
        let caught: (bool, String) = lua.load("return pcall(function() while true do end end)").eval().unwrap();
        assert!(!caught.0 && caught.1.contains("CPU limit exceeded"));
        assert!(lua_system::cpu_limit_exceeded(&lua).unwrap().is_some());
    }
}

#[test]
fn collectgarbage_options_are_matched_as_lua_matches_them() {
    let lua = sandboxed();
    let (r, e): (Option<i64>, String) = eval(&lua, "return collectgarbage('stop\\0')");
    assert_eq!((r, e.as_str()), (None, "permission denied: collectgarbage(\"stop\")"));
    assert!(eval::<i64>(&lua, "return require('system').get_gc_percent()") >= 0);
}

#[test]
fn finalizers_which_no_hook_can_stop_are_refused() {
    let lua = sandboxed();
    for code in ["setmetatable({}, { __gc = function() while true do end end })", "return newproxy(true)"] {
        let err = lua.load(code).exec().unwrap_err().to_string();
        assert!(err.contains("__gc metamethods are not allowed") || err.contains("newproxy"), "{code}: {err}");
    }
    // Other metatables are as usual.
    assert_eq!(eval::<i64>(&lua, "return setmetatable({}, { __index = function() return 7 end }).x"), 7);
}

#[test]
fn a_cpu_budget_is_the_states_own_and_can_be_lifted() {
    let lua = sandboxed();
    assert_eq!(lua_system::cpu_limit(&lua).unwrap(), Some(lua_system::SANDBOX_CPU_LIMIT));
    assert_eq!(lua_system::set_cpu_limit(&lua, None).unwrap(), Some(lua_system::SANDBOX_CPU_LIMIT));
    // Without a budget, long-running code runs to its end.
    assert_eq!(eval::<i64>(&lua, "local n = 0 for i = 1, 3e7 do n = n + 1 end return n"), 30_000_000);
    // A spent budget, set again, gives the state a new one.
    lua_system::set_cpu_limit(&lua, Some(Duration::from_millis(50))).unwrap();
    assert!(lua.load("while true do end").exec().is_err());
    lua_system::set_cpu_limit(&lua, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(eval::<i64>(&lua, "return 1 + 1"), 2);
    // Another state is not charged for this one's work.
    let other = sandboxed();
    assert!(lua_system::cpu_used(&other).unwrap() < Duration::from_millis(50));
}

/// A script's attack on a function through `debug`: every upvalue replaced with each junk value
/// while `call` runs (in `pcall`), then put back; a userdata upvalue's `__gc` called by hand.
/// Returns the errors the calls raised.
const ATTACK: &str = r#"
local f, call = ...
local errors = {}
local junk = { 42, -1, 1.5, "x", {}, true, type, coroutine.create(function() end) }
for i = 1, 8 do
  local name, value = debug.getupvalue(f, i)
  if name == nil then break end
  if type(value) == "userdata" then
    local mt = debug.getmetatable(value)
    local gc = type(mt) == "table" and rawget(mt, "__gc")
    if type(gc) == "function" then pcall(gc, value) pcall(call) pcall(gc, value) end
  end
  for _, replacement in ipairs(junk) do
    debug.setupvalue(f, i, replacement)
    local ok, err = pcall(call)
    if not ok then errors[#errors + 1] = tostring(err) end
  end
  debug.setupvalue(f, i, value)
end
return errors
"#;

/// Whether `debug` reaches a C function's upvalues (Lua 5.1's refuses).
const DEBUG_REACHES_C_UPVALUES: bool = !cfg!(feature = "lua51");

/// A state whose scripts have `debug`, as a host that trusts them more than the sandbox does.
fn with_debug() -> SystemLua {
    // SAFETY: as in `sandboxed`.
    unsafe { SystemLua::unsafe_new().unwrap() }
}

#[test]
fn the_collectgarbage_gate_survives_debug() {
    let lua = with_debug();
    lua_system::set_permissions(&lua, Permissions::profile(Profile::Observe)).unwrap();
    let call = lua.load("collectgarbage('count') collectgarbage('step') collectgarbage()").into_function().unwrap();
    let f: mlua::Function = lua.globals().get("collectgarbage").unwrap();
    let errors: Vec<String> = lua.load(ATTACK).call((f, call)).unwrap();
    assert_eq!(errors.iter().any(|e| e.contains("stand-in")), DEBUG_REACHES_C_UPVALUES, "{errors:?}");
    // Nothing a script can free: the gate's upvalues are a number and Lua's function.
    if DEBUG_REACHES_C_UPVALUES {
        let kinds: (String, String) = eval(
            &lua,
            "local _, a = debug.getupvalue(collectgarbage, 1) local _, b = debug.getupvalue(collectgarbage, 2) \
             return type(a), type(b)",
        );
        assert_eq!(kinds, ("number".into(), "function".into()));
    }
    // Put back, it gates as before.
    let (r, e): (Option<i64>, String) = eval(&lua, "return collectgarbage('stop')");
    assert_eq!((r, e.as_str()), (None, "permission denied: collectgarbage(\"stop\")"));
    // Lua's own argument errors read as Lua's: the function's name and the script's line.
    let bad: String = eval(&lua, "local ok, e = pcall(function() collectgarbage('bogus') end) return e");
    assert!(bad.contains(":1: bad argument #1 to 'collectgarbage' (invalid option 'bogus')"), "{bad}");
}

#[test]
fn the_cpu_budget_survives_debug_given_back_to_a_sandbox() {
    let lua = with_debug();
    let debug: mlua::Table = lua.globals().get("debug").unwrap();
    lua_system::sandbox(&lua).unwrap();
    lua.globals().set("debug", debug).unwrap();
    // sandbox.lua's xpcall holds the budget's check: a C function without upvalues.
    let spent: mlua::Function = eval(
        &lua,
        "for i = 1, 8 do local n, v = debug.getupvalue(xpcall, i) \
           if n == nil then break end \
           if type(v) == 'function' and debug.getupvalue(v, 1) == nil and v ~= xpcall and pcall(v, 42) then return v end \
         end",
    );
    let before: Option<String> = spent.call(("junk", 42)).unwrap();
    assert_eq!(before, None, "the budget is not spent");
    // The budget's message in the registry replaced: the check and the hook say it anyway.
    lua.load(
        "local r = debug.getregistry() for k, v in pairs(r) do \
           if type(v) == 'string' and v:find('CPU limit exceeded') then r[k] = {} end end",
    )
    .exec()
    .unwrap();
    lua_system::set_cpu_limit(&lua, Some(Duration::from_millis(100))).unwrap();
    lua.load(
        "local r = debug.getregistry() for k, v in pairs(r) do \
           if type(v) == 'string' and v:find('CPU limit exceeded') then r[k] = setmetatable({}, { __tostring = error }) end end",
    )
    .exec()
    .unwrap();
    let err = lua.load("while true do pcall(function() while true do end end) end").exec().unwrap_err().to_string();
    assert!(err.contains("CPU limit exceeded"), "{err}");
    let after: Option<String> = spent.call(()).unwrap();
    assert_eq!(after.as_deref(), Some("CPU limit exceeded"));
}

#[test]
fn os_exit_runs_the_hosts_hooks_and_survives_debug() {
    let lua = with_debug();
    // A stand-in for the process's exit (the test must go on): records the code.
    let exits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = std::sync::Arc::clone(&exits);
    let exit = lua.create_function(move |_, code: i64| {
        recorded.lock().unwrap().push(code);
        Ok(())
    });
    lua.globals().get::<mlua::Table>("os").unwrap().set("exit", exit.unwrap()).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_seen = std::sync::Arc::clone(&seen);
    lua_system::on_exit(&lua, move |exiting| {
        let stats = exiting.mem_stats();
        let profile = exiting.heap_profile(); // the profiler is off: an empty profile
        hook_seen.lock().unwrap().push((stats.alloc, profile.total(lua_system::heap_profile::View::InuseSpace)));
    })
    .unwrap();
    lua.load("os.exit(3) coroutine.wrap(function() os.exit(4) end)()").exec().unwrap();
    assert_eq!(*exits.lock().unwrap(), [3, 4]);
    assert!(seen.lock().unwrap().iter().all(|&(alloc, in_use)| alloc > 0 && in_use == 0), "{:?}", seen.lock().unwrap());
    assert_eq!(seen.lock().unwrap().len(), 2);
    // Upvalue 1 is never set to the other stand-in's number here: that one would call the
    // process's exit, had it not been replaced; here it would only record.
    let call = lua.load("os.exit(5)").into_function().unwrap();
    let f: mlua::Function = eval(&lua, "return os.exit");
    let errors: Vec<String> = lua.load(ATTACK).call((f, call)).unwrap();
    assert_eq!(errors.iter().any(|e| e.contains("stand-in")), DEBUG_REACHES_C_UPVALUES, "{errors:?}");
    lua.load("os.exit(6)").exec().unwrap();
    assert_eq!(exits.lock().unwrap().last(), Some(&6));
}

#[test]
fn track_collectgarbage_reports_its_collections_forced() {
    let lua = SystemLua::new().unwrap();
    let forced = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&forced);
    lua.on_gc_cycle(Some(Box::new(move |cycle| seen.lock().unwrap().push(cycle.forced)))).unwrap();
    lua_system::track_collectgarbage(&lua).unwrap();
    let first: mlua::Function = lua.globals().get("collectgarbage").unwrap();
    lua_system::track_collectgarbage(&lua).unwrap(); // once: the second finds it in place
    assert_eq!(lua.globals().get::<mlua::Function>("collectgarbage").unwrap(), first);
    lua.load("collectgarbage() collectgarbage('collect')").exec().unwrap();
    let forced = forced.lock().unwrap();
    assert!(forced.len() >= 2 && forced.iter().rev().take(2).all(|&f| f), "{forced:?}");
}
