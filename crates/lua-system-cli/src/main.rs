//! `lua-system`: the `lua` interpreter with the `system` module built in.
//!
//! It behaves as lua.c does: the same options, the `arg` table, `LUA_INIT`, the REPL on a
//! terminal, stdin otherwise; errors go to stderr with a traceback and exit status 1. The Lua
//! state is a [`lua_system::SystemLua`], so every figure of `system.mem_stats()` is exact, and
//! the process allocator is jemalloc, whose statistics give the process heap figures.
//!
//! The process starts as a C program does (`main` below), not through Rust's runtime start:
//! that start ignores SIGPIPE, which child processes inherit, and opens /dev/null on closed
//! standard streams, which Lua's `io` library then reads and writes without an error. lua.c
//! does neither, and a drop-in `lua` must not either (docs/runner.md, "Signals and standard
//! streams").

// Unit tests run under the test harness's own `main`.
#![cfg_attr(not(test), no_main)]
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

// The runner's unsafe code, each site with its SAFETY note: the Lua C API as lua.c uses it, the
// C functions guarding a script's last words at its memory limit, the loader that shares the
// name `system`, the kernel's CPU limit with its signal handler, and the emergency collections
// C reports; and `main`, the entry point C calls.
#[allow(unsafe_code)]
mod cpu_backstop;
#[cfg(emergency_wrapped)]
#[allow(unsafe_code)]
mod emergency;
#[allow(unsafe_code)]
mod last_words;
mod listen;
#[allow(unsafe_code)]
mod lua_c;
mod monitor;
mod options;
mod paths;
mod repl;
#[allow(unsafe_code)]
mod system_module;
mod warnings;

use std::ffi::{c_char, c_int};
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use lua_system::mlua::{self, Lua, Table};
use lua_system::{Permissions, Profile, SystemLua};

use crate::lua_c::{Args, Chunk, Outcome};
use crate::options::{Action, GcMode, Options, StateKind};

/// jemalloc serves the runner's whole process, the Lua heap included: its statistics give
/// `mem_stats()`'s process heap figures, and its sized frees make the Lua allocator cheap. A
/// build without the `jemalloc` feature keeps the system allocator (for valgrind: docs/runner.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: lua_system::Jemalloc = lua_system::Jemalloc;

/// jemalloc's options, read at its first allocation (its `malloc_conf`, under the prefix of
/// tikv-jemalloc's build; `_RJEM_MALLOC_CONF` in the environment still overrides them).
///
/// `slab_sizes:1-128:8`: blocks of 128 bytes and less (a Lua table's header, its slots and array
/// part, a closure, an upvalue, a short string) come from slabs of up to 8 pages instead of 1 (jemalloc
/// puts at most 512 blocks in a slab). With one-page slabs, the slabs of the classes a program allocates together interleave page by page,
/// and a full collection, which walks the objects in the order they were made, finds each
/// class's next object a page further on: a collection of 2.1M live tables took 74 ms against
/// glibc's 72 and mimalloc's 50, and takes 56 ms with these slabs; of a mixed heap of tables,
/// strings and closures, 73 ms against 51 (BENCHMARKS.md, "Full collections and the allocator").
/// A limited state's arena holds at least one such slab for each class it touches; the limit
/// does not charge those first slabs (`lua_system`'s arena, SECURITY.md).
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals, unsafe_code)]
// SAFETY: jemalloc's weak `const char *malloc_conf` is replaced by this one, a pointer to a
// NUL-terminated string that lives as long as the program; nothing else defines the symbol.
#[unsafe(no_mangle)]
static _rjem_malloc_conf: &u8 = &JEMALLOC_OPTIONS[0];

#[cfg(feature = "jemalloc")]
static JEMALLOC_OPTIONS: [u8; 19] = *b"slab_sizes:1-128:8\0";

/// The runner's own name (`--version`), and its messages' when `argv[0]` is empty.
pub const PROGNAME: &str = "lua-system";

/// The name the runner's messages start with: the program's name as it was called, as lua.c's
/// `progname` (a symlink named `lua` says `lua: ...`).
pub fn progname() -> &'static str {
    CALLED_AS.get().map_or(PROGNAME, String::as_str)
}

static CALLED_AS: OnceLock<String> = OnceLock::new();

/// The process's entry point, called by the C library as lua.c's `main` is. Rust's own start
/// (`lang_start`) never runs, so SIGPIPE keeps the action the runner was started with (the
/// default: a write to a closed pipe ends the process, and its children, as in lua), and a
/// closed standard stream stays closed (`io.read` reports `Bad file descriptor`, and the next
/// file opened takes its number, as in lua). What that start did and the runner needs is done
/// here or not needed: the arguments come from `std::env::args_os` (glibc hands them to the
/// Rust library before `main`); a panic still prints its message (the default hook) and ends
/// the process with status 101; Rust's buffered stdout is flushed by `std::process::exit`. Left
/// out: the main thread's name (a panic there says `<unnamed>`) and Rust's stack overflow
/// message (an overflow is a plain SIGSEGV, as in lua).
#[allow(unsafe_code)]
// SAFETY: the only `main` symbol of the program (`#![no_main]` leaves it to this one), with the
// signature C's start code calls; it takes no pointers from its arguments, and no panic unwinds
// out of it.
#[cfg_attr(not(test), unsafe(no_mangle))]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let status = std::panic::catch_unwind(run_main).unwrap_or(101);
    std::process::exit(status)
}

fn run_main() -> i32 {
    // The process's CPUs and the default limit are fixed now, before any script runs (as Go
    // reads them at start): nothing a script does later can narrow them.
    let _ = lua_system::num_cpu();
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if let Some(name) = argv.first().filter(|name| !name.is_empty()) {
        let _ = CALLED_AS.set(name.clone());
    }
    let options = match Options::parse(&argv) {
        Ok(options) => options,
        Err(bad) => {
            eprint!("{}: {bad}\n{}", progname(), options::usage(progname()));
            return 1;
        }
    };
    if options.help {
        print!("{}", options::usage(progname()));
        return 0;
    }
    if options.listen.is_some() || options.mem_profile.is_some() {
        keep_standard_streams_for_the_script();
    }
    match run(&argv, &options) {
        Ok(()) => 0,
        Err(failure) => {
            let message = match failure {
                Failure::Lua(message) => message,
                Failure::Runner(error) => Some(report(&error).into_bytes()),
            };
            if let Some(message) = message {
                print_message(&message);
            }
            1
        }
    }
}

/// Opens /dev/null on the standard streams that are closed, as Rust's runtime start would have.
/// Only when the runner runs threads of its own (`--listen`, `--mem-profile`): they open files
/// and sockets while the script runs, and one of those must never take the place of the script's
/// stdin or stdout.
fn keep_standard_streams_for_the_script() {
    // An open takes the lowest free descriptor: while that is a standard stream's, keep it open.
    while let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::{AsRawFd, IntoRawFd};
        if null.as_raw_fd() > 2 {
            return;
        }
        // Child processes inherit it as their standard stream: not closed on exec.
        let _ = rustix::io::fcntl_setfd(&null, rustix::io::FdFlags::empty());
        let _ = null.into_raw_fd();
    }
}

/// lua.c's `l_message`: the program's name as it was called, then the message, on stderr.
fn print_message(message: &[u8]) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{}: ", progname());
    let _ = stderr.write_all(message);
    let _ = writeln!(stderr);
}

/// Why the runner stops with status 1.
enum Failure {
    /// Lua code failed: the message as lua.c reports it (with the traceback), if any.
    Lua(Option<Vec<u8>>),
    /// The runner could not do its own part.
    Runner(mlua::Error),
}

impl From<mlua::Error> for Failure {
    fn from(error: mlua::Error) -> Self {
        Failure::Runner(error)
    }
}

/// A chunk's outcome as the runner's: an error stops it.
fn ran(outcome: Outcome) -> Result<(), Failure> {
    match outcome {
        Outcome::Ran => Ok(()),
        Outcome::Failed(message) => Err(Failure::Lua(message)),
        Outcome::NotLoaded(message) | Outcome::Incomplete(message) => Err(Failure::Lua(Some(message))),
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
        StateKind::Accounted => State::Accounted(lua_c::accounted_state()?),
        StateKind::Plain => State::Plain(lua_c::plain_state()),
    })
}

fn run(argv: &[String], options: &Options) -> Result<(), Failure> {
    // How old mem_stats()'s process figures may be, in milliseconds (default 10).
    if let Some(ms) = std::env::var("LUA_SYSTEM_SAMPLE_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        lua_system::set_process_sample_interval(std::time::Duration::from_millis(ms));
    }
    let lua = new_state(options.state)?;
    // --gctrace, --mem-profile and --stats watch the state (monitor.rs), its cycles from its
    // creation: every output counts the same cycles as `mem_stats().num_gc`.
    let watch = monitor::Watch::new(options).map_err(mlua::Error::runtime)?;
    let sampled = match &lua {
        State::Accounted(state) => Some(state),
        State::Plain(_) if options.gctrace || options.mem_profile.is_some() => {
            return Err(mlua::Error::runtime("--gctrace and --mem-profile need the accounted state").into());
        }
        State::Plain(_) => None,
    };
    if let Some(state) = sampled {
        watch.watch_cycles(state)?;
    }
    if options.ignore_environment {
        // Read by the package library when it opens: ignore LUA_PATH and LUA_CPATH.
        lua.set_named_registry_value("LUA_NOENV", true)?;
    }
    // As lua.c: the collector is stopped while the state is built.
    lua.gc_stop();
    lua_c::open_libs(&lua)?;
    paths::set(&lua, options.ignore_environment)?;
    lua_system::install(&lua)?;
    if options.profile.as_deref() != Some("sandbox") {
        system_module::share_the_name(&lua)?;
    }
    apply_restrictions(&lua, options)?;
    let warnings = lua_c::install_warnings(&lua);

    if options.version {
        print_version(&lua);
    }
    if options.runner_version {
        println!("{PROGNAME} {}, the system module built in", env!("CARGO_PKG_VERSION"));
    }
    // lua.c of 5.3 on (and LuaJIT) creates `arg` before running anything; that of 5.1 and 5.2
    // only for a script, right before it (`run_script`).
    if !ARG_WITH_SCRIPT_ONLY {
        lua.globals().set("arg", arg_table(&lua, argv, options.script)?)?;
    }
    start_collector(&lua, options.gc_mode)?;

    watch.install(&lua)?;
    last_words::install(&lua)?;

    let result = watch.run(sampled, || run_program(&lua, argv, options, &warnings));
    watch.finish(&lua);
    // A spent CPU budget is what stopped the script, whatever error object reached the top (a
    // script at its memory limit cannot even build the traceback); and a script that spent it
    // does not exit with success.
    match (result, lua_system::cpu_limit_exceeded(&lua)) {
        (Err(Failure::Lua(Some(message))), Ok(Some(_))) if contains(&message, b"CPU limit exceeded") => {
            Err(Failure::Lua(Some(message)))
        }
        (_, Ok(Some(exceeded))) => Err(Failure::Lua(Some(exceeded.into_bytes()))),
        (result, _) => result,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Everything lua.c runs after creating the state: `LUA_INIT`, `-e`/`-l`/`-W` in order, the
/// script, the REPL.
fn run_program(lua: &Lua, argv: &[String], options: &Options, warnings: &warnings::Warnings) -> Result<(), Failure> {
    if !options.ignore_environment {
        run_lua_init(lua)?;
    }
    for action in &options.actions {
        match action {
            Action::Execute(code) => ran(lua_c::run(
                lua,
                Chunk::Code { source: code.as_bytes(), name: "=(command line)" },
                Args::Given(&[]),
                false,
            )?)?,
            Action::Require { global, module } => ran(lua_c::require(lua, module, global.as_deref())?)?,
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
        } else if let Err(Failure::Lua(Some(message))) =
            ran(lua_c::run(lua, Chunk::File(None), Args::Given(&[]), false)?)
        {
            // As lua.c: stdin run for want of anything else reports its error, and the
            // interpreter still exits with success.
            print_message(&message);
        }
    }
    Ok(())
}

/// `--profile`, `--allow`, `--deny`, `--memory-limit` and `--cpu-limit`. `--profile sandbox`
/// makes the state `lua_system::sandbox`'s (SECURITY.md), with the limits given or its own.
fn apply_restrictions(lua: &Lua, options: &Options) -> mlua::Result<()> {
    let bad = |message: String| mlua::Error::runtime(message);
    if let Some(bytes) = options.memory_limit {
        lua_system::set_memory_limit(lua, Some(bytes))?;
    }
    if let Some(limit) = options.cpu_limit {
        lua_system::set_cpu_limit(lua, Some(limit))?;
    }
    let profile = options.profile.as_deref().map(str::parse::<Profile>).transpose().map_err(bad)?;
    if profile == Some(Profile::Sandbox) {
        lua_system::sandbox(lua)?;
        lua_c::refuse_binary_chunks();
    }
    if let Some(limit) = lua_system::cpu_limit(lua)? {
        cpu_backstop::arm(limit);
    }
    let mut permissions = match profile {
        Some(profile) => Permissions::profile(profile),
        None => Permissions::default(),
    };
    for (allow, name) in &options.permission_changes {
        permissions =
            if *allow { permissions.allow(name) } else { permissions.deny(name) }.map_err(|e| bad(e.to_string()))?;
    }
    lua_system::set_permissions(lua, permissions)
}

/// Starts the collector as lua.c of the embedded release does once the state is built: in
/// generational mode in Lua 5.4 and 5.5, incremental in 5.1 to 5.3 and LuaJIT; `--gc` chooses
/// another mode.
fn start_collector(lua: &Lua, mode: Option<GcMode>) -> mlua::Result<()> {
    lua.gc_restart();
    let generational = mode.map_or(cfg!(any(feature = "lua54", feature = "lua55")), |m| m == GcMode::Generational);
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    {
        use mlua::state::{GcGenParams, GcIncParams, GcMode as Mode};
        lua.gc_set_mode(if generational {
            Mode::Generational(GcGenParams::default())
        } else {
            Mode::Incremental(GcIncParams::default())
        });
    }
    #[cfg(not(any(feature = "lua54", feature = "lua55")))]
    if generational {
        return Err(mlua::Error::runtime("--gc generational: this Lua has no generational collector (5.4 and 5.5 do)"));
    }
    // What the module remembers of the collector's setting follows the mode.
    lua_system::refresh_gc_setting(lua)?;
    Ok(())
}

/// lua.c's `print_version`: the embedded Lua's own line, exactly (on stderr in 5.1, as lua.c
/// 5.1 prints it); `--version` adds the runner's.
fn print_version(lua: &Lua) {
    let line = lua_version_line(lua);
    if cfg!(feature = "lua51") {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// `LUA_COPYRIGHT` of the embedded Lua's headers (build.rs), or what Lua says of itself.
fn lua_version_line(lua: &Lua) -> String {
    if let Some(line) = lua_c::version_line() {
        return line.to_string_lossy().into_owned();
    }
    let jit: Option<String> = lua.load("return jit and jit.version").eval().ok().flatten();
    jit.unwrap_or_else(|| lua.globals().get("_VERSION").unwrap_or_default())
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

/// lua.c's `handle_luainit`: `LUA_INIT_5_x` or else `LUA_INIT`; `@file` runs the file, anything
/// else is code.
fn run_lua_init(lua: &Lua) -> Result<(), Failure> {
    let Some((variable, code)) = paths::named_variable("LUA_INIT") else { return Ok(()) };
    match code.strip_prefix('@') {
        Some(path) => ran(lua_c::run(lua, Chunk::File(Some(path)), Args::Given(&[]), false)?),
        None => ran(lua_c::run(
            lua,
            Chunk::Code { source: code.as_bytes(), name: &format!("={variable}") },
            Args::Given(&[]),
            false,
        )?),
    }
}

/// Whether `arg` exists only when there is a script (lua.c of Lua 5.1 and 5.2).
const ARG_WITH_SCRIPT_ONLY: bool = cfg!(any(feature = "lua51", feature = "lua52"));

/// lua.c's `handle_script`: the script (`-` alone is stdin) with the arguments after it.
fn run_script(lua: &Lua, argv: &[String], index: usize) -> Result<(), Failure> {
    if ARG_WITH_SCRIPT_ONLY {
        lua.globals().set("arg", arg_table(lua, argv, Some(index))?)?;
    }
    let name = &argv[index];
    let from_stdin = name == "-" && argv.get(index - 1).is_none_or(|previous| previous != "--");
    let given: Vec<&[u8]> = argv[index + 1..].iter().map(|a| a.as_bytes()).collect();
    let args = if ARG_WITH_SCRIPT_ONLY { Args::Given(&given) } else { Args::ArgTable };
    let file = if from_stdin { None } else { Some(name.as_str()) };
    ran(lua_c::run(lua, Chunk::File(file), args, false)?)
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
