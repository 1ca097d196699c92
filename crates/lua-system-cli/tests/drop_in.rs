//! The runner is a drop-in `lua`: for each case, the runner and the stock interpreter of the
//! same Lua version (Debian's `lua5.x` or `luajit`), both called as `lua`, print the same bytes
//! on stdout and stderr and exit with the same status.
//!
//! The stock interpreter is required when `CI` is set (CI installs it); elsewhere its absence
//! skips the comparison with a note. Debian has no Lua 5.5 yet: for 5.5 the comparison is
//! always skipped.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use common::*;

/// Debian's interpreter for the Lua the runner embeds.
fn stock_interpreter() -> &'static str {
    if cfg!(feature = "luajit") {
        "luajit"
    } else if cfg!(feature = "lua51") {
        "lua5.1"
    } else if cfg!(feature = "lua52") {
        "lua5.2"
    } else if cfg!(feature = "lua53") {
        "lua5.3"
    } else if cfg!(feature = "lua55") {
        "lua5.5" // not packaged by Debian bookworm
    } else {
        "lua5.4"
    }
}

fn stock_available() -> bool {
    let found = Command::new(stock_interpreter()).arg("-v").output().is_ok();
    if !found {
        let required = std::env::var_os("CI").is_some() && !cfg!(feature = "lua55");
        assert!(!required, "{} is not installed (CI installs it)", stock_interpreter());
        eprintln!("note: {} is not installed; the comparison is skipped", stock_interpreter());
    }
    found
}

/// Runs `program` called as `lua` with `args`, `stdin` and `env`.
fn run_as_lua(program: &str, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command.arg0("lua").args(args);
    run_lua_command(command, stdin, env)
}

/// Runs `program` called as `lua` with `args` through bash, with `redirection` applied to it
/// (`<&-`: stdin closed), so that it starts as a shell starts it.
fn run_as_lua_redirected(program: &str, args: &[&str], redirection: &str) -> Output {
    let mut command = Command::new("bash");
    command.args(["-c", &format!("exec -a lua \"$0\" \"$@\" {redirection}"), program]).args(args);
    run_lua_command(command, "", &[])
}

/// Runs `command` as `run_as_lua` runs the interpreter: from the repository's root, without the
/// environment variables Lua reads (but `env`), `stdin` written to it.
fn run_lua_command(mut command: Command, stdin: &str, env: &[(&str, &str)]) -> Output {
    command
        .current_dir(repo_root())
        .env_remove("LUA_INIT")
        .env_remove("LUA_INIT_5_2")
        .env_remove("LUA_INIT_5_3")
        .env_remove("LUA_INIT_5_4")
        .env_remove("LUA_INIT_5_5")
        .env_remove("LUA_PATH")
        .env_remove("LUA_CPATH")
        .env_remove("LUA_PATH_5_2")
        .env_remove("LUA_PATH_5_3")
        .env_remove("LUA_PATH_5_4")
        .env_remove("LUA_CPATH_5_2")
        .env_remove("LUA_CPATH_5_3")
        .env_remove("LUA_CPATH_5_4")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// What differs from run to run of the stock interpreter itself is made the same: LuaJIT's
/// tracebacks show unnamed C functions by address (`[C]: at 0x55f987f1f2c0`), each becomes
/// `at 0x...`; Lua 5.2's name a global function by the first path to it found in the global
/// table, whose order depends on a hash seed chosen at random (`'_G.require'` or `'require'`).
fn without_run_to_run_differences(output: &mut Output) {
    let text = String::from_utf8_lossy(&output.stderr).replace("in function '_G.", "in function '");
    let mut normalised = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("at 0x") {
        normalised.push_str(&rest[..at + 5]);
        rest = rest[at + 5..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
        normalised.push_str("...");
    }
    normalised.push_str(rest);
    output.stderr = normalised.into_bytes();
}

/// Asserts the runner and the stock interpreter behave the same on `args`; returns what they
/// printed.
fn same(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut ours = run_as_lua(env!("CARGO_BIN_EXE_lua-system"), args, stdin, env);
    let mut stock = run_as_lua(stock_interpreter(), args, stdin, env);
    without_run_to_run_differences(&mut ours);
    without_run_to_run_differences(&mut stock);
    let show = |o: &Output| format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), stdout(o), stderr(o));
    assert!(
        ours.status.code() == stock.status.code() && ours.stdout == stock.stdout && ours.stderr == stock.stderr,
        "{args:?} differs\n--- {}:\n{}\n--- lua-system:\n{}",
        stock_interpreter(),
        show(&stock),
        show(&ours)
    );
    ours
}

/// Asserts the runner and the stock interpreter behave the same on `args` started with
/// `redirection` (`run_as_lua_redirected`).
fn same_redirected(args: &[&str], redirection: &str) -> Output {
    let ours = run_as_lua_redirected(env!("CARGO_BIN_EXE_lua-system"), args, redirection);
    let stock = run_as_lua_redirected(stock_interpreter(), args, redirection);
    let show = |o: &Output| format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), stdout(o), stderr(o));
    assert!(
        ours.status.code() == stock.status.code() && ours.stdout == stock.stdout && ours.stderr == stock.stderr,
        "{args:?} {redirection} differs\n--- {}:\n{}\n--- lua-system:\n{}",
        stock_interpreter(),
        show(&stock),
        show(&ours)
    );
    ours
}

/// Each case: the arguments, stdin.
const ERRORS: &[(&[&str], &str)] = &[
    (&["-e", "error('a string')"], ""),
    (&["-e", "error(42)"], ""),
    (&["-e", "error({})"], ""),
    (&["-e", "error()"], ""),
    // The runner's own `error` and `os.exit` (last_words.rs): levels, numbers, bad arguments.
    (&["-e", "error(4.5)"], ""),
    (&["-e", "error('no position', 0)"], ""),
    (&["-e", "local function f() error('the caller', 2) end f()"], ""),
    (&["-e", "error('bad level', 'x')"], ""),
    (&["-e", "os.exit('x')"], ""),
    (&["-e", "os.exit({})"], ""),
    (&["-e", "os.exit(1.5)"], ""),
    (&["-e", "os.exit(nil)"], ""),
    (&["-e", "os.exit('7')"], ""),
    (&["-e", "error(setmetatable({}, {__tostring = function() return 'an object' end}))"], ""),
    (&["-e", "local function f() error('deep') end local function g() f() end g()"], ""),
    (&["-e", "local t = setmetatable({}, {__index = function() error('in a metamethod') end}) return t.x"], ""),
    // Stack overflow with the module's cycle sentinel due at a cycle's end (c/finalizer_room.c;
    // the traceback's "skipping N levels" differs: the runner's frames below the chunk take fewer
    // slots). Lua 5.1 to 5.3 are not compared: a finalizer due at a limit still fails there.
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    (&["-e", "local function f() return 1 + f() end print(pcall(f))"], ""),
    (&["-e", "x = = 1"], ""),
    (&["-e", "for"], ""),
    (&["-e", "nosuch()"], ""),
    (&["-e", "local s = 'x' .. {}"], ""),
    (&["/nonexistent/script.lua"], ""),
    (&["-l", "nosuch_module"], ""),
    (&["-l", "string", "-e", "print(type(string))"], ""),
    (&["-l", "s=string", "-e", "print(type(s))"], ""),
    (&["-"], "print('from stdin', ...) error('and fails')"),
    (&["-", "a", "b"], "print(...)"),
    (&[], "print(1) error('no tty')"),
    (&[], "x = = 1"),
];

#[test]
fn errors_read_as_the_stock_interpreter_prints_them() {
    if !stock_available() {
        return;
    }
    for (args, stdin) in ERRORS {
        same(args, stdin, &[]);
    }
}

#[test]
fn scripts_arguments_and_exit_statuses_are_the_stock_interpreters() {
    if !stock_available() {
        return;
    }
    let script = temp_script(
        "drop_in.lua",
        "#!/usr/bin/env lua\nprint(#arg, arg[0] ~= nil, arg[-1], ...)\nif ... == 'fail' then error('asked to') end\n\
         if ... == 'exit' then os.exit(3) end\nif ... == 'false' then os.exit(false) end\n",
    );
    let script = script.to_str().unwrap();
    for extra in [&[][..], &["x", "y z"], &["fail"], &["exit"], &["false"]] {
        let mut args = vec![script];
        args.extend_from_slice(extra);
        same(&args, "", &[]);
    }
    same(&["-e", "print(1)", "-e", "print(2)"], "", &[]);
    same(&["-e", "print(arg[-1], arg[0], arg[1])", "--", script, "a"], "", &[]);
    same(&["-e", "io.write('no newline')", "-e", "os.exit(true)"], "", &[]);
    same(&["-e", "io.stderr:write('to stderr\\n') os.exit(2)"], "", &[]);
}

#[test]
fn lua_init_is_the_stock_interpreters() {
    if !stock_available() {
        return;
    }
    let init = temp_script("drop_in_init.lua", "print('init file', ...)\n");
    let init_file = format!("@{}", init.to_str().unwrap());
    same(&["-e", "print(x)"], "", &[("LUA_INIT", "x = 'from LUA_INIT'")]);
    same(&["-e", "print(x)"], "", &[("LUA_INIT", &init_file)]);
    same(&["-e", "print(x)"], "", &[("LUA_INIT", "error('init fails')")]);
    same(&["-e", "print(x)"], "", &[("LUA_INIT", "@/nonexistent/init.lua")]);
    if cfg!(not(feature = "lua51")) {
        same(&["-E", "-e", "print(x)"], "", &[("LUA_INIT", "x = 1")]);
    }
}

#[test]
fn modules_are_searched_where_the_stock_interpreter_searches() {
    if !stock_available() {
        return;
    }
    let show = "print(package.path) print(package.cpath)";
    same(&["-e", show], "", &[]);
    same(&["-e", show], "", &[("LUA_PATH", "/first/?.lua;;/last/?.lua"), ("LUA_CPATH", ";;")]);
    same(&["-e", show], "", &[("LUA_PATH", "/only/?.lua")]);
    if cfg!(not(feature = "lua51")) {
        same(&["-E", "-e", show], "", &[("LUA_PATH", "/ignored/?.lua")]);
    }
}

#[test]
fn debians_c_modules_load_and_work_as_in_the_stock_interpreter() {
    if !stock_available() {
        return;
    }
    // lua-cjson and lua-lpeg (CI installs them): C modules that leave the Lua API undefined,
    // resolved against the runner's own Lua. Heavy use under the runner's allocator.
    let installed = |path: &str| std::path::Path::new(path).exists();
    let version = if cfg!(any(feature = "lua51", feature = "luajit")) {
        "5.1"
    } else if cfg!(feature = "lua52") {
        "5.2"
    } else if cfg!(feature = "lua53") {
        "5.3"
    } else {
        "5.4"
    };
    let cjson = format!("/usr/lib/{}-linux-gnu/lua/{version}/cjson.so", std::env::consts::ARCH);
    let lpeg = format!("/usr/lib/{}-linux-gnu/lua/{version}/lpeg.so", std::env::consts::ARCH);
    if !(installed(&cjson) && installed(&lpeg)) || cfg!(feature = "lua55") {
        assert!(std::env::var_os("CI").is_none() || cfg!(feature = "lua55"), "CI installs lua-cjson and lua-lpeg");
        eprintln!("note: lua-cjson or lua-lpeg not installed for Lua {version}; skipped");
        return;
    }
    let out = same(
        &[
            "-e",
            "local cjson = require('cjson') local lpeg = require('lpeg') local re = require('re') \
             print(cjson.encode({1, 2, 3}), cjson.decode('{\"a\": [1, 2]}').a[2]) \
             print(lpeg.match(lpeg.C(lpeg.R('az') ^ 1), 'hello1'), re.find('the number 42', '[0-9]+')) \
             local n = 0 for i = 1, 20000 do \
               local t = cjson.decode(cjson.encode({i = i, s = string.rep('x', i % 100), l = {i, i}})) \
               n = n + t.l[2] + #re.gsub(t.s, \"'x'\", 'yy') end \
             collectgarbage() print(n) print(pcall(cjson.decode, '{bad'))",
        ],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // cjson decodes numbers as floats where Lua has them (5.3 on: `2.0`).
    let text = stdout(&out);
    assert!(text.starts_with("[1,2,3]\t2") && text.contains("\nhello\t12\t13\n"), "{text}");
    assert!(text.contains("\nfalse\tExpected object key string"), "{text}");
}

#[test]
fn compiled_chunks_run_as_in_the_stock_interpreter() {
    if !stock_available() {
        return;
    }
    // A chunk compiled by the runner runs in the runner (bytecode is not portable between
    // builds); the stock interpreter runs its own the same way.
    for program in [env!("CARGO_BIN_EXE_lua-system"), stock_interpreter()] {
        let dir = std::env::temp_dir().join(format!("lua-system-drop-in-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chunk = dir.join("chunk.luac");
        let dump = format!(
            "local f = io.open({:?}, 'wb') f:write(string.dump((loadstring or load)('print(\"compiled\", ...)'))) f:close()",
            chunk.to_str().unwrap()
        );
        let made = run_as_lua(program, &["-e", &dump], "", &[]);
        assert!(made.status.success(), "{}", stderr(&made));
        let ran = run_as_lua(program, &[chunk.to_str().unwrap(), "arg"], "", &[]);
        assert_eq!(stdout(&ran), "compiled\targ\n", "{program}: {}", stderr(&ran));
    }
}

/// Starts `program` as `lua` on `args`, sends it SIGINT once it runs, returns what it printed.
fn interrupted(program: &str, args: &[&str]) -> Output {
    let child = Command::new(program)
        .arg0("lua")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The script prints a line once it is in its loop; wait for that line before interrupting.
    let mut child = child;
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    use std::io::Read;
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"started\n");
    // Let the script return from `flush` into its loop, so that both are interrupted in the
    // same place (Lua 5.1 names the function the hook stops in).
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    let mut output = child.wait_with_output().unwrap();
    output.stdout = rest;
    output
}

#[test]
fn sigint_stops_the_running_code_with_an_error_as_in_the_stock_interpreter() {
    if !stock_available() {
        return;
    }
    // LuaJIT runs no hook in compiled code (a compiled loop ignores SIGINT, in luajit too):
    // the cases run interpreted.
    let cases: [&[&str]; 2] = [
        &["-e", "if jit then jit.off() end io.stdout:write('started\\n') io.stdout:flush() while true do end"],
        // The error is an ordinary one: pcall catches it, and the script goes on.
        &[
            "-e",
            "if jit then jit.off() end io.stdout:write('started\\n') io.stdout:flush() \
             print(pcall(function() while true do end end)) print('after')",
        ],
    ];
    for args in cases {
        let mut ours = interrupted(env!("CARGO_BIN_EXE_lua-system"), args);
        let mut stock = interrupted(stock_interpreter(), args);
        without_run_to_run_differences(&mut ours);
        without_run_to_run_differences(&mut stock);
        assert_eq!(
            (ours.status.code(), stdout(&ours), stderr(&ours)),
            (stock.status.code(), stdout(&stock), stderr(&stock)),
            "{args:?}"
        );
    }
}

/// Runs `program` as `lua` on `args`, reads two lines of its stdout, closes the pipe and waits
/// (at most 20 s) for it to end; returns how it ended.
fn read_two_lines_then_close(program: &str, args: &[&str]) -> std::process::ExitStatus {
    use std::io::BufRead;
    let mut child = Command::new(program)
        .arg0("lua")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "y\n", "{program}");
    }
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} still writes to a closed pipe after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_closed_pipe_ends_the_script_and_its_children_as_in_the_stock_interpreter() {
    if !stock_available() {
        return;
    }
    // `lua ... | head -2`: SIGPIPE ends the writer (status 128 + 13 in a shell).
    use std::os::unix::process::ExitStatusExt;
    let args = ["-e", "while true do print('y') end"];
    let ours = read_two_lines_then_close(env!("CARGO_BIN_EXE_lua-system"), &args);
    let stock = read_two_lines_then_close(stock_interpreter(), &args);
    assert_eq!(stock.signal(), Some(SIGPIPE), "{stock:?}");
    assert_eq!(ours.signal(), stock.signal(), "{ours:?}");
    // Child processes inherit the default action: `yes` ends silently, killed by SIGPIPE.
    same(&["-e", "os.execute('yes | head -1')"], "", &[]);
    same(&["-e", "local p = io.popen('yes') p:read('l') print(p:close())"], "", &[]);
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;

#[test]
fn closed_standard_streams_stay_closed_as_in_the_stock_interpreter() {
    if !stock_available() {
        return;
    }
    // stdin closed: reading fails with EBADF; with no script, stdin runs and cannot be read.
    same_redirected(&["-e", "print(io.read('l'))"], "<&-");
    same_redirected(&["-e", "print(io.stdin:read(1))"], "<&-");
    same_redirected(&[], "<&-");
    // stdout closed: a flush reports the error; a file the script opens takes descriptor 1.
    let report = "local function show(...) io.stderr:write(table.concat({tostring(select(1, ...)), \
                  tostring(select(2, ...)), tostring(select(3, ...))}, ' '), '\\n') end ";
    same_redirected(&["-e", &format!("{report} io.stdout:write('x') show(io.stdout:flush())")], ">&-");
    let file = std::env::temp_dir().join(format!("lua-system-drop-in-fd-{}", std::process::id()));
    let open = format!(
        "local f = assert(io.open({:?}, 'w')) os.execute('readlink /proc/$PPID/fd/1 >&2') f:close()",
        file.to_str().unwrap()
    );
    let out = same_redirected(&["-e", &open], ">&-");
    assert!(stderr(&out).contains("lua-system-drop-in-fd-"), "{}", stderr(&out));
    let _ = std::fs::remove_file(file);
    // stderr closed: an error message has nowhere to go; the status is still 1.
    same_redirected(&["-e", "error('lost')"], "2>&-");
}

#[test]
fn option_errors_name_the_program_as_called_as_the_stock_interpreter() {
    if !stock_available() {
        return;
    }
    // lua.c 5.1's and luajit.c's `-e` take the next argument whatever it is: `-v` is code there.
    let lua51 = cfg!(any(feature = "lua51", feature = "luajit"));
    if lua51 {
        same(&["-e", "-v"], "", &[]);
    }
    let bad: &[&[&str]] = &[&["-x"], &["--help-me"], &["-e"], &["-l"], &["-vx"], &["-e", "-v"]];
    for args in bad.iter().filter(|args| !(lua51 && args.len() == 2)) {
        let ours = run_as_lua(env!("CARGO_BIN_EXE_lua-system"), args, "", &[]);
        let stock = run_as_lua(stock_interpreter(), args, "", &[]);
        assert_eq!(ours.status.code(), stock.status.code(), "{args:?}");
        assert_eq!(stdout(&ours), stdout(&stock), "{args:?}");
        // lua.c's message and options, in its words (5.1's and luajit.c's name no bad option;
        // luajit.c lists -b, -j and -O, which the runner does not have), then the runner's own.
        let stock_text = stderr(&stock)
            .lines()
            .filter(|line| !["  -b ", "  -j ", "  -O"].iter().any(|option| line.starts_with(option)))
            .map(|line| format!("{line}\n"))
            .collect::<String>();
        let ours_text = stderr(&ours);
        let ours_text = if lua51 { ours_text.split_once('\n').unwrap().1.to_owned() } else { ours_text };
        assert!(ours_text.starts_with(&stock_text), "{args:?}\n--- stock:\n{stock_text}\n--- ours:\n{ours_text}");
        assert!(ours_text[stock_text.len()..].contains("--mem-profile"), "{ours_text}");
    }
}
