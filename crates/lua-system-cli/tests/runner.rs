//! The runner as a process: options, the `arg` table, stdin, errors, exit status, examples.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn execute_option_runs_code_with_the_module() {
    let out = run(&["-e", "local s = require('system'); print(s.num_goroutines(), s.allocated() > 0)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\ttrue\n");
}

#[test]
fn script_gets_arguments_in_arg_and_varargs() {
    let script = temp_script("args.lua", "print(arg[0] ~= nil, arg[1], arg[2], select('#', ...), ...)\n");
    let out = run(&[script.to_str().unwrap(), "one", "two"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "true\tone\ttwo\t2\tone\ttwo\n");
}

#[test]
fn negative_arg_indices_hold_the_interpreter_and_options() {
    let script = temp_script("neg.lua", "print(arg[-1], arg[-2] ~= nil)\n");
    let out = run(&["-e", "x = 1", script.to_str().unwrap()]);
    assert_eq!(stdout(&out), "x = 1\ttrue\n", "{}", stderr(&out));
}

#[test]
fn a_script_error_prints_message_and_traceback_on_stderr_and_exits_1() {
    let script = temp_script("boom.lua", "local x = 1\nerror('boom')\n");
    let out = run(&[script.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // As lua.c: the program's name as called (argv[0]), then the message.
    assert!(err.starts_with(&format!("{}: ", env!("CARGO_BIN_EXE_lua-system"))), "{err}");
    assert!(err.contains("boom.lua:2: boom"), "{err}");
    assert!(err.contains("stack traceback:"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_syntax_error_exits_1() {
    let out = run(&["-e", "x = = 1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(command line):1:"), "{}", stderr(&out));
}

#[test]
fn a_missing_script_exits_1() {
    let out = run(&["/nonexistent/script.lua"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot open /nonexistent/script.lua"), "{}", stderr(&out));
}

#[test]
fn bad_option_prints_usage_and_exits_1() {
    let out = run(&["-z"]);
    assert_eq!(out.status.code(), Some(1));
    // The program's name as it was called (lua.c's `progname`): here, its path.
    let called = env!("CARGO_BIN_EXE_lua-system");
    assert!(stderr(&out).starts_with(&format!("{called}: unrecognized option '-z'\n")), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("usage: {called} [options]")), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn help_option_prints_the_usage_on_stdout_and_runs_nothing() {
    let out = run(&["--help", "-e", "print('ran')"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let text = stdout(&out);
    assert!(text.starts_with(&format!("usage: {} [options]", env!("CARGO_BIN_EXE_lua-system"))), "{text}");
    for option in ["  -e ", "--mem-profile FILE", "--heap-profile FILE", "--listen ADDRESS", "--help"] {
        assert!(text.contains(option), "{option}: {text}");
    }
    assert!(!text.contains("ran"), "{text}");
}

#[test]
fn version_option_prints_the_version() {
    let out = run(&["-v"]);
    assert!(out.status.success());
    // The embedded Lua's own line (lua.c 5.1 prints it on stderr), then the runner's.
    let lua_line = if cfg!(feature = "lua51") { stderr(&out) } else { stdout(&out) };
    assert!(lua_line.starts_with("Lua"), "{lua_line}");
    assert!(cfg!(feature = "luajit") || lua_line.contains("Copyright (C) 1994-"), "{lua_line}");
    assert!(!stdout(&out).contains("lua-system"), "as lua.c: the Lua line alone: {}", stdout(&out));
    let out = run(&["--version"]);
    assert!(stdout(&out).contains("lua-system "), "{}", stdout(&out));
}

#[test]
fn dash_runs_stdin_with_arguments() {
    let out = run_with_stdin(&["-", "x"], "print(require('system').pid() > 0, ...)");
    assert_eq!(stdout(&out), "true\tx\n", "{}", stderr(&out));
}

#[test]
fn stdin_that_is_not_a_terminal_runs_as_a_script() {
    let out = run_with_stdin(&[], "print('from stdin')");
    assert_eq!(stdout(&out), "from stdin\n", "{}", stderr(&out));
}

#[test]
fn interactive_mode_prints_expressions_and_continues_statements() {
    // An expression alone is printed from Lua 5.3 on; `=expr` up to 5.4.
    let expression =
        if cfg!(any(feature = "lua53", feature = "lua54", feature = "lua55")) { "1 + 2" } else { "=1 + 2" };
    let input = format!("{expression}\nfor i = 1, 2 do\nprint('line', i)\nend\nerror('oops')\nprint('still here')\n");
    let out = run_with_stdin(&["-i"], &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("3\n"), "{text}");
    assert!(text.contains("line\t1\nline\t2\n"), "{text}");
    assert!(text.contains("still here"), "{text}");
    assert!(stderr(&out).contains("oops"), "{}", stderr(&out));
}

#[test]
fn require_option_sets_a_global() {
    // lua.c of 5.1 and LuaJIT only calls require; 5.2 and 5.3 set the global of the same name;
    // 5.4 and 5.5 also take `global=module`.
    let out = run(&["-l", "system", "-e", "print(type(system), package.loaded.system ~= nil)"]);
    let global = if cfg!(any(feature = "lua51", feature = "luajit")) { "nil" } else { "table" };
    assert_eq!(stdout(&out), format!("{global}\ttrue\n"), "{}", stderr(&out));
    if cfg!(any(feature = "lua54", feature = "lua55")) {
        let out = run(&["-l", "sys=system", "-e", "print(type(sys.pid), system)"]);
        assert_eq!(stdout(&out), "function\tnil\n", "{}", stderr(&out));
    }
}

#[test]
fn lua_init_runs_first_unless_ignored() {
    let out = runner().env("LUA_INIT", "greeting = 'hi'").args(["-e", "print(greeting)"]).output().unwrap();
    assert_eq!(stdout(&out), "hi\n");
    if cfg!(not(feature = "lua51")) {
        // -E came with Lua 5.2.
        let out = runner().env("LUA_INIT", "greeting = 'hi'").args(["-E", "-e", "print(greeting)"]).output().unwrap();
        assert_eq!(stdout(&out), "nil\n");
    }
}

#[test]
fn shebang_line_is_skipped_and_line_numbers_kept() {
    let script = temp_script("shebang.lua", "#!/usr/bin/env lua-system\nerror('line two')\n");
    let out = run(&[script.to_str().unwrap()]);
    assert!(stderr(&out).contains("shebang.lua:2: line two"), "{}", stderr(&out));
}

#[test]
#[cfg(any(feature = "lua54", feature = "lua55"))] // warnings came with Lua 5.4
fn warnings_are_off_until_turned_on() {
    let out = run(&["-e", "warn('quiet')"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let out = run(&["-W", "-e", "warn('loud', 'er')"]);
    assert_eq!(stderr(&out), "Lua warning: louder\n");
    let out = run(&["-e", "warn('@on'); warn('now')"]);
    assert_eq!(stderr(&out), "Lua warning: now\n");
}

#[test]
fn os_exit_sets_the_status() {
    assert_eq!(run(&["-e", "os.exit(3)"]).status.code(), Some(3));
    assert_eq!(run(&["-e", "os.exit(0)"]).status.code(), Some(0));
}

#[test]
fn every_example_runs() {
    let mut ran = 0;
    for entry in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "lua") {
            let out = run(&[path.to_str().unwrap()]);
            assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
            assert!(!stdout(&out).is_empty());
            ran += 1;
        }
    }
    assert!(ran >= 3, "examples found: {ran}");
}

#[test]
fn gc_tuning_example_shows_fewer_cycles_for_higher_percents() {
    let out = run(&["examples/gc_tuning.lua"]);
    let cycles: Vec<u64> = stdout(&out)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 4 && fields[0].parse::<u64>().is_ok()).then(|| fields[1].parse().unwrap())
        })
        .collect();
    assert_eq!(cycles.len(), 3, "{}", stdout(&out));
    assert!(cycles[0] > cycles[1] && cycles[1] > cycles[2], "{cycles:?}");
}

/// Runs the runner's REPL on a pseudo-terminal (`script`, from util-linux), typing each input
/// after a pause, then Ctrl-D; returns what the terminal showed, or `None` without `script`.
fn on_a_terminal(inputs: &[&str]) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command to provide a terminal");
        return None;
    }
    let command = env!("CARGO_BIN_EXE_lua-system").to_owned();
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for input in inputs {
        std::thread::sleep(std::time::Duration::from_millis(150));
        stdin.write_all(input.as_bytes()).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    stdin.write_all(b"\x04").unwrap(); // end of input
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    Some(stdout(&out))
}

#[test]
fn on_a_terminal_without_a_script_the_repl_starts() {
    let lines =
        ["s = require('system')\n", "print(s.num_goroutines())\n", "for i = 1, 2 do\n", "print('n', i)\n", "end\n"];
    let Some(text) = on_a_terminal(&lines) else { return };
    assert!(text.contains("Lua 5.") || text.contains("LuaJIT"), "version banner: {text}");
    assert!(text.contains("1\tnil"), "printed: {text}");
    assert!(text.contains(">> "), "continuation prompt: {text}");
    assert!(text.contains("n\t1") && text.contains("n\t2"), "loop ran: {text}");
}

#[test]
fn up_recalls_a_whole_multi_line_chunk_as_in_lua() {
    // Up, then Enter: the three lines run again as one chunk (lua.c saves the chunk whole).
    let Some(text) = on_a_terminal(&["for i = 1, 2 do\n", "print('n', i)\n", "end\n", "\x1b[A", "\n"]) else {
        return;
    };
    assert_eq!(text.matches("n\t1").count(), 2, "the chunk ran twice: {text}");
    assert_eq!(text.matches("n\t2").count(), 2, "the chunk ran twice: {text}");
    assert!(!text.contains("expected"), "no syntax error: {text}");
}

#[test]
fn ctrl_c_at_a_prompt_drops_the_chunk_being_typed() {
    // docs/runner.md: at `>>`, the chunk's earlier lines go too; the session goes on.
    let Some(text) = on_a_terminal(&["for i = 1, 2 do\n", "\x03", "print('after')\n", "\x03", "print('still here')\n"])
    else {
        return;
    };
    assert!(text.contains("after\r\n"), "{text}");
    assert!(text.contains("still here\r\n"), "{text}");
    assert!(!text.contains("expected"), "the dropped chunk was not completed: {text}");
}

#[test]
fn plain_state_option_runs_the_module_interposed() {
    let out = run(&["--state", "plain", "-e", "print(require('system').mem_stats().accounting)"]);
    assert_eq!(stdout(&out), "interposed\n", "{}", stderr(&out));
    let out = run(&["-e", "print(require('system').mem_stats().accounting)"]);
    assert_eq!(stdout(&out), "exact\n", "{}", stderr(&out));
}

/// A program at its stack limit gets Lua's own errors with the collector (and the module's cycle
/// sentinel, a finalizer due at every cycle's end) running, in both states: a finalizer due at
/// the very end of the stack waits for a later step (c/finalizer_room.c). Before, "error in
/// error handling" (the first case always, the second often). Lua 5.4 and 5.5: 5.1 to 5.3 fail
/// in their own ways at their limits when a finalizer is due (docs/runner.md).
#[cfg(any(feature = "lua54", feature = "lua55"))]
#[test]
fn errors_at_the_stack_limits_are_the_programs_own() {
    let recursion = "local function f() return 1 + f() end";
    // A full collection at one of the 4th to 20th deepest levels, then the overflow.
    let lua_stack = "local depth, stop = 0, -1
        local function f(n) depth = n if n == stop then collectgarbage() end return 1 + f(n + 1) end
        collectgarbage('stop') pcall(f, 0) collectgarbage('restart')
        local deepest = depth
        for k = 4, 20 do
          stop = deepest - k
          local _, message = pcall(f, 0)
          if not message:find('stack overflow$') or message:find('error in') then print(k, message) end
        end
        print('done')";
    // The deepest nesting of pcalls that works with the collector stopped works with it running
    // (allocations at the bottom end cycles there).
    let c_stack = "local big = string.rep('x', 1048576)
        local function g(n, work)
          if n == 0 then
            if work then for _ = 1, 50 do local s = big .. big end end
            return 'bottom'
          end
          return select(2, pcall(g, n - 1, work))
        end
        collectgarbage('stop')
        local n = 1
        while g(n, false) == 'bottom' do n = n + 1 end
        collectgarbage('restart')
        for _ = 1, 5 do
          local got = g(n - 1, true)
          if got ~= 'bottom' then print(n - 1, got) end
        end
        print('done')";
    for state in ["accounted", "plain"] {
        let out = run(&["--state", state, "-e", &format!("{recursion} print(pcall(f))")]);
        assert_eq!(stdout(&out), "false\t(command line):1: stack overflow\n", "{state}: {}", stderr(&out));
        let out = run(&["--state", state, "-e", &format!("{recursion} f()")]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(": (command line):1: stack overflow\nstack traceback:\n"), "{state}: {err}");
        for script in [lua_stack, c_stack] {
            let out = run(&["--state", state, "-e", script]);
            assert_eq!(stdout(&out), "done\n", "{state}: {}", stderr(&out));
        }
    }
}

#[test]
fn observe_profile_denies_changes_and_keeps_the_functions() {
    let script = "local s = require('system')
        print(type(s.gc), s.gc())
        print(s.set_gc_percent(50))
        print(s.go_max_procs() > 0, s.go_max_procs(1))
        print(s.set_memory_limit(1000))
        print(s.get_gc_percent() >= 0, s.pid() > 0, s.allocated() > 0)";
    let out = run(&["--profile", "observe", "-e", script]);
    assert_eq!(
        stdout(&out),
        "function\tnil\tpermission denied: system.gc\n\
         nil\tpermission denied: system.set_gc_percent\n\
         true\tnil\tpermission denied: system.go_max_procs\n\
         nil\tpermission denied: system.set_memory_limit\n\
         true\ttrue\ttrue\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn sandbox_profile_also_hides_the_host_and_allow_deny_adjust_it() {
    let script = "local s = require('system') print(s.hostname()) print(s.pid()) print(s.gc()) print(s.num_cpu() > 0)";
    let out = run(&["--profile", "sandbox", "--allow", "gc", "--deny", "num_cpu", "-e", script]);
    assert_eq!(
        stdout(&out),
        "nil\tpermission denied: system.hostname\n\
         nil\tpermission denied: system.pid\n\
         true\tnil\n",
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("attempt to compare"), "num_cpu denied: {}", stderr(&out));

    // metrics() stays readable in the sandbox, and reveals neither the host name nor the pid;
    // denied by name, it answers as every denied function does.
    let out = run(&["--profile", "sandbox", "-e", "print((require('system').metrics()))"]);
    let text = stdout(&out);
    assert!(text.contains("\nlua_heap_alloc_bytes "), "{text}{}", stderr(&out));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(!text.contains(host.trim()) && !text.contains("pid"), "{text}");
    let out = run(&["--deny", "metrics", "-e", "print(require('system').metrics())"]);
    assert_eq!(stdout(&out), "nil\tpermission denied: system.metrics\n", "{}", stderr(&out));
}

#[test]
fn bad_profile_and_function_names_are_refused() {
    let out = run(&["--profile", "paranoid", "-e", ""]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown profile 'paranoid'"), "{}", stderr(&out));
    let out = run(&["--deny", "fork", "-e", ""]);
    assert!(stderr(&out).contains("'fork' is not a function of the system module"), "{}", stderr(&out));
}

#[test]
fn memory_limit_option_stops_a_runaway_script_which_can_recover() {
    let script = "local s = require('system')
        print(s.get_memory_limit())
        print(pcall(string.rep, 'x', 64 * 1024 * 1024))
        collectgarbage()
        print(#string.rep('y', 1024))";
    let out = run(&["--memory-limit", "8M", "-e", script]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    // Lua 5.3 says "not enough memory for buffer allocation" for string.rep's buffer.
    assert!(
        lines.len() == 3
            && lines[0] == "8388608\tnil"
            && lines[1].starts_with("false\tnot enough memory")
            && lines[2] == "1024",
        "{text}{}",
        stderr(&out)
    );
    let out = run(&["--memory-limit", "1M", "-e", "local t = {} for i = 1, 1e7 do t[i] = i end"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not enough memory"), "{}", stderr(&out));
}

/// `go_max_procs(n)` changes no setting a child process inherits: after `go_max_procs(1)`, `nproc`
/// started with `os.execute` counts as many CPUs as it does started by this test, and a child
/// runner reports the parent's `num_cpu()` and the default limit.
#[test]
fn go_max_procs_does_not_reach_child_processes() {
    // nproc counts fewer CPUs if OpenMP's variables ask it to: every nproc runs without them.
    let nproc = Command::new("nproc").env_remove("OMP_NUM_THREADS").env_remove("OMP_THREAD_LIMIT").output().unwrap();
    assert!(nproc.status.success());
    let machine = String::from_utf8(nproc.stdout).unwrap().trim().to_owned();
    let child =
        temp_script("child_cpus.lua", "local s = require('system') print('child', s.num_cpu(), (s.go_max_procs()))\n");
    let parent = temp_script(
        "parent_cpus.lua",
        r#"local s = require("system")
        local runner, child = ...
        local default = s.go_max_procs()
        assert(s.go_max_procs(1) == default and s.go_max_procs() == 1)
        print("parent", s.num_cpu(), default)
        io.stdout:flush() -- the children write to the same stdout
        assert(os.execute("nproc"))
        assert(os.execute(string.format("'%s' '%s'", runner, child)))
        print("limit", (s.go_max_procs()))
        "#,
    );
    let runner = env!("CARGO_BIN_EXE_lua-system");
    for path in [runner, child.to_str().unwrap()] {
        assert!(!path.contains('\''), "quoted for the shell as is: {path}");
    }
    let out = common::runner()
        .env_remove("OMP_NUM_THREADS")
        .env_remove("OMP_THREAD_LIMIT")
        .args([parent.to_str().unwrap(), runner, child.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let [parent, nproc, child, limit] = lines[..] else { panic!("four lines expected: {text}") };
    let parent: Vec<&str> = parent.split('\t').collect();
    assert_eq!(nproc, machine, "nproc in a child after go_max_procs(1): {text}");
    assert_eq!(child, format!("child\t{}\t{}", parent[1], parent[2]), "the child runner's num_cpu() and limit");
    assert_eq!(parent[1], machine, "num_cpu() is every CPU of the process: {text}");
    assert_eq!(limit, "limit\t1", "the parent's limit stayed: {text}");
}

/// A precompiled chunk is not checked by Lua and can corrupt memory: the sandbox refuses one as
/// the script, from a file (a `#!` line before it too) or from stdin, as its `load` does.
#[test]
fn the_sandbox_refuses_a_precompiled_script() {
    let dir = std::env::temp_dir().join(format!("lua-system-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("chunk.luac");
    let shebang = dir.join("chunk.lua");
    let make = format!(
        "local d = string.dump(function() print('ran') end) \
         io.open({:?}, 'wb'):write(d) io.open({:?}, 'wb'):write('#!/usr/bin/env lua\\n' .. d)",
        binary.to_str().unwrap(),
        shebang.to_str().unwrap()
    );
    assert!(run(&["-e", &make]).status.success());
    // Outside the sandbox it runs, as in lua.
    assert_eq!(stdout(&run(&[binary.to_str().unwrap()])), "ran\n");
    for path in [&binary, &shebang] {
        let out = run(&["--profile", "sandbox", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(stderr(&out).contains("binary chunk"), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lua-system"))
        .args(["--profile", "sandbox", "-"])
        .stdin(std::fs::File::open(&binary).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("binary chunk"));
    // Text scripts still run, a #! line included.
    std::fs::write(&shebang, "#!/usr/bin/env lua\nprint('text')\n").unwrap();
    assert_eq!(stdout(&run(&["--profile", "sandbox", shebang.to_str().unwrap()])), "text\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A script that filled its memory limit (its growth caught by `pcall`) still gets its own
/// last words out: the message of `error` with its position and lua.c's traceback, an error
/// object's `__tostring`, and the exit code of `os.exit`, with or without `--stats` (which
/// wraps `os.exit` in a call that needs memory). Before the reserve, each ended in "not enough
/// memory" and status 1.
#[test]
fn last_words_survive_the_memory_limit() {
    const FILL: &str =
        "local t = {}\nlocal ok = pcall(function() while true do t[#t+1] = {} end end)\nassert(not ok)\n";
    // (script, made before the limit is reached, run at it, exit status, on stderr)
    let cases: [(&str, &str, &str, Option<i32>, &str); 4] = [
        ("error.lua", "", "error('boom')\n", Some(1), "error.lua:4: boom"),
        ("traceback.lua", "local function f() error('deep') end\n", "f()\n", Some(1), "in local 'f'"),
        (
            "tostring.lua",
            "local e = setmetatable({}, {__tostring = function() return 'mine' end})\n",
            "error(e)\n",
            Some(1),
            "mine",
        ),
        ("exit.lua", "", "os.exit(3)\n", Some(3), ""),
    ];
    for (name, before, at_limit, code, expected) in cases {
        // Lua 5.1, 5.2 and LuaJIT need memory of their own to report an uncaught error at the
        // limit (call frames, before the message handler runs), and so may 5.3 (a frame for
        // each call, which its emergency collection may or may not make room for: its hash
        // seed is random): there only the exit code is kept (SECURITY.md).
        let needs_frames = cfg!(any(feature = "lua51", feature = "lua52", feature = "lua53", feature = "luajit"));
        if needs_frames && code == Some(1) {
            continue;
        }
        let script = temp_script(name, &format!("{before}{FILL}{at_limit}"));
        for stats in [&[][..], &["--stats", "json"][..]] {
            let mut args = vec!["--memory-limit", "8M"];
            args.extend_from_slice(stats);
            args.push(script.to_str().unwrap());
            let out = run(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), code, "{name} {stats:?}: {err}");
            assert!(err.contains(expected) && !err.contains("not enough memory"), "{name} {stats:?}: {err}");
            if !stats.is_empty() {
                let both = format!("{}{err}", stdout(&out));
                assert!(both.contains("\"lua_heap_alloc_bytes\""), "{name}: the figures are written");
            }
        }
    }
    // A limit set below what is in use: exiting needs no new memory, so the code survives too.
    let out = run(&["--stats", "json", "-e", "require('system').set_memory_limit(0) os.exit(2)"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The reserve is not a way past the limit: a script that keeps every message `error` builds
/// at its limit (each built inside the reserve) holds at most the reserve's 64 KiB more.
#[test]
fn the_reserve_bounds_what_error_messages_add_past_the_limit() {
    let script = temp_script(
        "hoard.lua",
        "local system = require('system')\n\
         local limit = 4 * 1024 * 1024\n\
         local m, kept, built, most, t = ('m'):rep(200), {}, 0, 0, {}\n\
         local function fill() while true do t[#t+1] = {} end end\n\
         for i = 1, 300 do kept[i] = false end\n\
         local function hoard()\n\
           system.set_memory_limit(limit)\n\
           pcall(fill)\n\
           -- The same call depth as the fill: the frames exist; error(m, 2) adds this line.\n\
           for i = 1, 300 do\n\
             local ok, message = pcall(error, m, 2)\n\
             if message ~= 'not enough memory' then built = built + 1; kept[i] = message end\n\
             most = math.max(most, system.allocated() or 0)\n\
           end\n\
         end\n\
         hoard()\n\
         t = nil\n\
         collectgarbage() -- Lua 5.1 does not collect by itself at the limit\n\
         print(most - limit, built)\n",
    );
    let out = run(&[script.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let mut fields = printed.split_whitespace().map(|v| v.parse::<i64>().unwrap());
    let (past, kept) = (fields.next().unwrap(), fields.next().unwrap());
    assert!(past <= 64 * 1024, "{past} bytes past the limit");
    assert!(kept > 0, "some messages were built past the limit: the reserve worked ({printed})");
}

/// The runner's jemalloc options reach jemalloc (its `malloc_conf` symbol under tikv-jemalloc's
/// prefix; a renamed prefix would leave the symbol unread, silently): jemalloc's own statistics
/// show the option read and the 64-byte class (a Lua 5.4 table's header) on slabs of 8 pages,
/// 512 blocks, where its default is one page (BENCHMARKS.md, "Full collections and the
/// allocator").
#[cfg(feature = "jemalloc")]
#[test]
fn jemalloc_gives_small_classes_the_runners_slabs() {
    let out = runner().args(["-e", ""]).env("_RJEM_MALLOC_CONF", "stats_print:true").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stats = stderr(&out);
    assert!(stats.contains("Global variable malloc_conf: \"slab_sizes:1-128:8\""), "{stats}");
    let mut lines = stats.lines().skip_while(|line| !line.starts_with("bins:"));
    let header: Vec<&str> = lines.next().expect("a bins table").split_whitespace().skip(1).collect();
    let column = |name: &str| header.iter().position(|c| *c == name).unwrap_or_else(|| panic!("{name}: {header:?}"));
    let (regs, pages) = (column("regs"), column("pgs"));
    let row_of = |size: &str| {
        stats
            .lines()
            .skip_while(|line| !line.starts_with("bins:"))
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&size))
            .unwrap_or_else(|| panic!("no bin of {size} bytes"))
    };
    let (small, larger) = (row_of("64"), row_of("160"));
    assert_eq!((small[regs], small[pages]), ("512", "8"), "64-byte class: {small:?}");
    // Above 128 bytes, jemalloc's own choice: 160-byte blocks fill 5 pages exactly.
    assert_eq!(larger[pages], "5", "160-byte class: {larger:?}");
}
