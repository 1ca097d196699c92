//! `lua-system`: the `lua` interpreter with the `system` module built in.
//!
//! It behaves as lua.c does: the same options, the `arg` table, `LUA_INIT`, the REPL on a
//! terminal, stdin otherwise; errors go to stderr with a traceback and exit status 1. The Lua
//! state is a [`lua_system::SystemLua`], so every figure of `system.mem_stats()` is exact, and
//! the process allocator is jemalloc, whose statistics give the process heap figures.

mod monitor;
mod options;
mod repl;
mod warnings;

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use lua_system::mlua::{self, Lua, MultiValue, StdLib, Table, Value};
use lua_system::{Permissions, Profile, SystemLua};

use crate::options::{Action, Options, StateKind, USAGE};

pub const PROGNAME: &str = "lua-system";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let options = match Options::parse(&argv) {
        Ok(options) => options,
        Err(bad) => {
            eprintln!("{PROGNAME}: {bad}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match run(&argv, &options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{PROGNAME}: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// The runner's Lua state.
enum State {
    Accounted(SystemLua),
    Plain(Lua),
}

impl std::ops::Deref for State {
    type Target = Lua;

    fn deref(&self) -> &Lua {
        match self {
            State::Accounted(lua) => lua,
            State::Plain(lua) => lua,
        }
    }
}

fn new_state(kind: StateKind) -> mlua::Result<State> {
    Ok(match kind {
        // SAFETY: the runner never clones the `Lua` out of the state.
        StateKind::Accounted => State::Accounted(unsafe { SystemLua::unsafe_new_with(StdLib::NONE)? }),
        // SAFETY: as lua.c, the runner opens every library, C modules included.
        StateKind::Plain => State::Plain(unsafe { Lua::unsafe_new_with(StdLib::NONE, mlua::LuaOptions::default()) }),
    })
}

fn run(argv: &[String], options: &Options) -> mlua::Result<()> {
    // How old mem_stats()'s process figures may be, in milliseconds (default 10).
    if let Some(ms) = std::env::var("LUA_SYSTEM_SAMPLE_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        lua_system::set_process_sample_interval(std::time::Duration::from_millis(ms));
    }
    let lua = new_state(options.state)?;
    if options.ignore_environment {
        // Read by the package library when it opens: ignore LUA_PATH and LUA_CPATH.
        lua.set_named_registry_value("LUA_NOENV", true)?;
    }
    lua.load_std_libs(StdLib::ALL)?;
    lua_system::install(&lua)?;
    apply_restrictions(&lua, options)?;
    let warnings = warnings::install(&lua);

    if options.version {
        print_version(&lua);
    }
    lua.globals().set("arg", arg_table(&lua, argv, options.script)?)?;

    // --gctrace, --mem-profile and --stats watch the state (monitor.rs).
    let watch = monitor::Watch::new(options).map_err(mlua::Error::runtime)?;
    let sampled = match &lua {
        State::Accounted(state) => Some(state),
        State::Plain(_) if options.gctrace || options.mem_profile.is_some() => {
            return Err(mlua::Error::runtime("--gctrace and --mem-profile need the accounted state"));
        }
        State::Plain(_) => None,
    };
    if let Some(state) = sampled {
        watch.watch_cycles(state)?;
    }
    watch.install(&lua)?;

    let result = watch.run(sampled, || run_program(&lua, argv, options, &warnings));
    watch.finish(&lua);
    result
}

/// Everything lua.c runs after creating the state: `LUA_INIT`, `-e`/`-l`/`-W` in order, the
/// script, the REPL.
fn run_program(lua: &Lua, argv: &[String], options: &Options, warnings: &warnings::Warnings) -> mlua::Result<()> {
    if !options.ignore_environment {
        run_lua_init(lua)?;
    }
    for action in &options.actions {
        match action {
            Action::Execute(code) => {
                lua.load(code.as_str()).set_name("=(command line)").exec()?;
            }
            Action::Require { global, module } => {
                let require: mlua::Function = lua.globals().get("require")?;
                let value: Value = require.call(module.as_str())?;
                lua.globals().set(global.as_str(), value)?;
            }
            Action::WarningsOn => warnings.turn_on(),
        }
    }
    if let Some(index) = options.script {
        run_script(lua, argv, index)?;
    }
    if options.interactive {
        repl::run(lua);
    } else if options.nothing_to_do() {
        if std::io::stdin().is_terminal() {
            print_version(lua);
            repl::run(lua);
        } else {
            run_chunk(lua, &read_stdin()?, "=stdin", MultiValue::new())?;
        }
    }
    Ok(())
}

/// `--profile`, `--allow`, `--deny` and `--memory-limit`.
fn apply_restrictions(lua: &Lua, options: &Options) -> mlua::Result<()> {
    let bad = |message: String| mlua::Error::runtime(message);
    let mut permissions = match &options.profile {
        Some(name) => Permissions::profile(name.parse::<Profile>().map_err(bad)?),
        None => Permissions::default(),
    };
    for (allow, name) in &options.permission_changes {
        permissions =
            if *allow { permissions.allow(name) } else { permissions.deny(name) }.map_err(|e| bad(e.to_string()))?;
    }
    lua_system::set_permissions(lua, permissions)?;
    if let Some(bytes) = options.memory_limit {
        lua_system::set_memory_limit(lua, Some(bytes))?;
    }
    Ok(())
}

fn print_version(lua: &Lua) {
    let lua_version: String = lua.globals().get("_VERSION").unwrap_or_default();
    println!("{PROGNAME} {} -- {lua_version} with the system module", env!("CARGO_PKG_VERSION"));
}

/// `arg[0]` is the script, negative indices the interpreter and its options, positive ones the
/// script's arguments (lua.c's `createargtable`).
fn arg_table(lua: &Lua, argv: &[String], script: Option<usize>) -> mlua::Result<Table> {
    let script = script.unwrap_or(0);
    let table = lua.create_table()?;
    for (i, arg) in argv.iter().enumerate() {
        table.raw_set(i as i64 - script as i64, arg.as_str())?;
    }
    Ok(table)
}

/// `LUA_INIT_5_4` or `LUA_INIT`: `@file` runs the file, anything else is code.
fn run_lua_init(lua: &Lua) -> mlua::Result<()> {
    let (name, code) = match std::env::var("LUA_INIT_5_4") {
        Ok(code) => ("=LUA_INIT_5_4", code),
        Err(_) => match std::env::var("LUA_INIT") {
            Ok(code) => ("=LUA_INIT", code),
            Err(_) => return Ok(()),
        },
    };
    match code.strip_prefix('@') {
        Some(path) => run_chunk(lua, &read_file(path)?, &format!("@{path}"), MultiValue::new()),
        None => lua.load(code.as_str()).set_name(name).exec(),
    }
}

fn run_script(lua: &Lua, argv: &[String], index: usize) -> mlua::Result<()> {
    let name = &argv[index];
    let from_stdin = name == "-" && argv.get(index - 1).is_none_or(|previous| previous != "--");
    let (source, chunk_name) =
        if from_stdin { (read_stdin()?, "=stdin".to_owned()) } else { (read_file(name)?, format!("@{name}")) };
    let args =
        argv[index + 1..].iter().map(|a| lua.create_string(a).map(Value::String)).collect::<mlua::Result<_>>()?;
    run_chunk(lua, &source, &chunk_name, args)
}

fn run_chunk(lua: &Lua, source: &[u8], name: &str, args: MultiValue) -> mlua::Result<()> {
    lua.load(skip_shebang(source)).set_name(name).call::<()>(args)
}

/// As `luaL_loadfile`: a first line starting with `#` is skipped (its newline kept, so line
/// numbers stay right).
fn skip_shebang(source: &[u8]) -> Vec<u8> {
    if source.first() == Some(&b'#') {
        let end = source.iter().position(|&b| b == b'\n').unwrap_or(source.len());
        source[end..].to_vec()
    } else {
        source.to_vec()
    }
}

fn read_file(path: &str) -> mlua::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| mlua::Error::runtime(format!("cannot open {path}: {e}")))
}

fn read_stdin() -> mlua::Result<Vec<u8>> {
    let mut source = Vec::new();
    std::io::stdin().read_to_end(&mut source).map_err(|e| mlua::Error::runtime(format!("cannot read stdin: {e}")))?;
    Ok(source)
}

/// An error as lua.c prints it: the message (with its traceback), without mlua's prefixes.
pub fn report(error: &mlua::Error) -> String {
    match error {
        mlua::Error::RuntimeError(message) | mlua::Error::MemoryError(message) => message.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", report(cause))
        }
        other => other.to_string(),
    }
}
