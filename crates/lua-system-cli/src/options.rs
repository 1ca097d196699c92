//! Command-line options, parsed as the `lua` interpreter (lua.c) parses them.

use std::fmt;

/// The usage text, as lua.c's `print_usage` of the embedded version writes it with `progname`
/// (lua.c's options, in its words), then the runner's own options.
pub fn usage(progname: &str) -> String {
    format!("{}{LUA_OPTIONS}{RUNNER_OPTIONS}", LUA_USAGE.replace("{progname}", progname))
}

const LUA_USAGE: &str = if cfg!(feature = "luajit") {
    "usage: {progname} [options]... [script [args]...].\nAvailable options are:\n"
} else if cfg!(feature = "lua51") {
    "usage: {progname} [options] [script [args]].\nAvailable options are:\n"
} else {
    "usage: {progname} [options] [script [args]]\nAvailable options are:\n"
};

/// lua.c's (luajit.c's without `-b`, `-j` and `-O`, which the runner does not have).
const LUA_OPTIONS: &str = if cfg!(feature = "luajit") {
    "  -e chunk  Execute string 'chunk'.
  -l name   Require library 'name'.
  -i        Enter interactive mode after executing 'script'.
  -v        Show version information.
  -E        Ignore environment variables.
  --        Stop handling options.
  -         Execute stdin and stop handling options.
"
} else if cfg!(feature = "lua51") {
    "  -e stat  execute string 'stat'
  -l name  require library 'name'
  -i       enter interactive mode after executing 'script'
  -v       show version information
  --       stop handling options
  -        execute stdin and stop handling options
"
} else if cfg!(feature = "lua52") {
    "  -e stat  execute string 'stat'
  -i       enter interactive mode after executing 'script'
  -l name  require library 'name'
  -v       show version information
  -E       ignore environment variables
  --       stop handling options
  -        stop handling options and execute stdin
"
} else if cfg!(feature = "lua53") {
    "  -e stat  execute string 'stat'
  -i       enter interactive mode after executing 'script'
  -l name  require library 'name' into global 'name'
  -v       show version information
  -E       ignore environment variables
  --       stop handling options
  -        stop handling options and execute stdin
"
} else {
    "  -e stat   execute string 'stat'
  -i        enter interactive mode after executing 'script'
  -l mod    require library 'mod' into global 'mod'
  -l g=mod  require library 'mod' into global 'g'
  -v        show version information
  -E        ignore environment variables
  -W        turn warnings on
  --        stop handling options
  -         stop handling options and execute stdin
"
};

const RUNNER_OPTIONS: &str = "\
lua-system's own options:
  --help    show this help on stdout
  --version show version information, then the runner's
  --profile full|observe|sandbox
            what scripts may do (default full; sandbox: untrusted code, SECURITY.md)
  --allow LIST, --deny LIST
            allow or deny functions of the module, by name, comma-separated
  --memory-limit BYTES
            the state's memory limit; suffixes K, M, G (powers of 1024); sandbox: 64M
  --cpu-limit SECONDS
            the CPU time the script may use (SECURITY.md); sandbox: 10
  --gctrace  a line on stderr per completed GC cycle (format: docs/watching-memory.md)
  --mem-profile FILE
            sample the heap while the script runs; write FILE as .svg (a chart), .csv or .json
  --mem-profile-interval MS
            the sampling interval (default 10)
  --heap-profile FILE
            profile where the heap goes; write FILE when the script ends, as .pb.gz or
            .pprof (go tool pprof), .folded (folded stacks) or .svg (a flamegraph)
  --heap-profile-rate BYTES
            one sample per BYTES allocated on average (default 512K, as Go; 1: every one;
            0, with --listen only: no heap profile)
  --listen ADDRESS
            serve /metrics (Prometheus) and /debug/pprof/heap (pprof) on ADDRESS, such as
            127.0.0.1:9464, while the script runs (docs/watching-memory.md)
  --stats json|prometheus
            print the final figures on stderr at exit
  --gc incremental|generational
            the collector's mode (default: lua.c's, generational in Lua 5.4 and 5.5)
  --state accounted|plain
            the Lua state: the module's own allocator, every figure exact (default), or
            mlua's plain state with the module interposed (counting from its load)
";

/// An option acted on in command-line order, before the script runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// `-e stat`
    Execute(String),
    /// `-l mod` or `-l g=mod`: `global = require(module)`; no global in Lua 5.1 and LuaJIT,
    /// whose lua.c only calls `require` (see [`library`]).
    Require { global: Option<String>, module: String },
    /// `-W`
    WarningsOn,
}

/// The collector's mode (`--gc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcMode {
    Incremental,
    Generational,
}

/// Which Lua state the runner creates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// `lua_system::SystemLua`: every allocation accounted.
    #[default]
    Accounted,
    /// `mlua::Lua` with mlua's allocator; the module installed, interposed in front of it.
    Plain,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub state: StateKind,
    /// `--gc`; `None`: as lua.c of the embedded release.
    pub gc_mode: Option<GcMode>,
    /// `--profile`, then `--allow`/`--deny` in order: (allow?, function).
    pub profile: Option<String>,
    pub permission_changes: Vec<(bool, String)>,
    pub memory_limit: Option<usize>,
    /// `--cpu-limit`: the script's CPU budget.
    pub cpu_limit: Option<std::time::Duration>,
    pub gctrace: bool,
    pub mem_profile: Option<String>,
    pub mem_profile_interval_ms: Option<u64>,
    /// `--heap-profile`: where the heap profile goes.
    pub heap_profile: Option<String>,
    /// `--heap-profile-rate`: bytes between samples on average.
    pub heap_profile_rate: Option<u64>,
    /// `--listen`: where `/metrics` and `/debug/pprof/heap` are served.
    pub listen: Option<String>,
    pub stats: Option<String>,
    pub actions: Vec<Action>,
    pub interactive: bool,
    pub version: bool,
    /// `--version`: `-v`, then the runner's own version line.
    pub runner_version: bool,
    /// `--help`: the usage on stdout, and nothing else.
    pub help: bool,
    pub ignore_environment: bool,
    /// Index in `argv` of the script (`-` for stdin), if any.
    pub script: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BadOption(pub String);

impl fmt::Display for BadOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Options {
    /// Parses `argv` (with the program name at index 0).
    pub fn parse(argv: &[String]) -> Result<Options, BadOption> {
        let mut options = Options::default();
        let mut i = 1;
        while i < argv.len() {
            let arg = argv[i].as_str();
            if !arg.starts_with('-') {
                options.script = Some(i);
                break;
            }
            match arg {
                "--" => {
                    options.script = (i + 1 < argv.len()).then_some(i + 1);
                    break;
                }
                "-" => {
                    options.script = Some(i);
                    break;
                }
                // -E came with Lua 5.2 (LuaJIT has it too), -W with 5.4: as in lua.c, an
                // option the version lacks is refused.
                "-E" if !cfg!(feature = "lua51") => options.ignore_environment = true,
                "--gctrace" => options.gctrace = true,
                "--mem-profile"
                | "--mem-profile-interval"
                | "--stats"
                | "--heap-profile"
                | "--heap-profile-rate"
                | "--listen" => {
                    i += 1;
                    let Some(value) = argv.get(i) else {
                        return Err(BadOption(format!("'{arg}' needs argument")));
                    };
                    match arg {
                        "--mem-profile" => options.mem_profile = Some(value.clone()),
                        "--heap-profile" => options.heap_profile = Some(value.clone()),
                        "--listen" => options.listen = Some(value.clone()),
                        "--heap-profile-rate" => {
                            options.heap_profile_rate = Some(parse_bytes(value).ok_or_else(|| {
                                BadOption(format!("'--heap-profile-rate' needs a number of bytes, not '{value}'"))
                            })? as u64);
                        }
                        "--stats" if matches!(value.as_str(), "json" | "prometheus") => {
                            options.stats = Some(value.clone());
                        }
                        "--stats" => {
                            return Err(BadOption(format!("'--stats' needs json or prometheus, not '{value}'")));
                        }
                        _ => {
                            let ms = value.parse::<u64>().ok().filter(|&ms| ms > 0);
                            options.mem_profile_interval_ms = Some(ms.ok_or_else(|| {
                                BadOption(format!("'--mem-profile-interval' needs milliseconds, not '{value}'"))
                            })?);
                        }
                    }
                }
                "--profile" | "--allow" | "--deny" | "--memory-limit" | "--cpu-limit" => {
                    i += 1;
                    let Some(value) = argv.get(i) else {
                        return Err(BadOption(format!("'{arg}' needs argument")));
                    };
                    match arg {
                        "--profile" => options.profile = Some(value.clone()),
                        "--cpu-limit" => {
                            let seconds = value.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9);
                            options.cpu_limit = Some(std::time::Duration::from_secs_f64(seconds.ok_or_else(|| {
                                BadOption(format!("'--cpu-limit' needs a positive number of seconds, not '{value}'"))
                            })?));
                        }
                        "--memory-limit" => {
                            options.memory_limit = Some(parse_bytes(value).ok_or_else(|| {
                                BadOption(format!(
                                    "'--memory-limit' needs a number of bytes (suffix K, M or G), not '{value}'"
                                ))
                            })?)
                        }
                        _ => {
                            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                                options.permission_changes.push((arg == "--allow", name.to_owned()));
                            }
                        }
                    }
                }
                "--gc" => {
                    i += 1;
                    options.gc_mode = Some(match argv.get(i).map(String::as_str) {
                        Some("incremental") => GcMode::Incremental,
                        Some("generational") => GcMode::Generational,
                        _ => return Err(BadOption("'--gc' needs 'incremental' or 'generational'".into())),
                    });
                }
                "--state" => {
                    i += 1;
                    options.state = match argv.get(i).map(String::as_str) {
                        Some("accounted") => StateKind::Accounted,
                        Some("plain") => StateKind::Plain,
                        _ => return Err(BadOption("'--state' needs 'accounted' or 'plain'".into())),
                    };
                }
                "-W" if cfg!(any(feature = "lua54", feature = "lua55")) => options.actions.push(Action::WarningsOn),
                "-i" => {
                    options.interactive = true;
                    options.version = true;
                }
                "-v" => options.version = true,
                "--help" => options.help = true,
                "--version" => {
                    options.version = true;
                    options.runner_version = true;
                }
                _ if arg.starts_with("-e") || arg.starts_with("-l") => {
                    let value = if arg.len() > 2 {
                        arg[2..].to_owned()
                    } else {
                        i += 1;
                        // lua.c from 5.2 on refuses an option as the value (`-e -v`); 5.1's
                        // and luajit.c take the next argument whatever it is.
                        match argv.get(i) {
                            Some(value) if !value.starts_with('-') || LUA51_OPTIONS => value.clone(),
                            _ => return Err(BadOption(format!("'{arg}' needs argument"))),
                        }
                    };
                    options.actions.push(if arg.starts_with("-e") { Action::Execute(value) } else { library(&value) });
                }
                _ => return Err(BadOption(format!("unrecognized option '{arg}'"))),
            }
            i += 1;
        }
        match (options.heap_profile_rate, &options.heap_profile, &options.listen) {
            (Some(_), None, None) => {
                return Err(BadOption("'--heap-profile-rate' needs '--heap-profile FILE' or '--listen'".to_owned()));
            }
            (Some(0), Some(_), _) => {
                return Err(BadOption(
                    "'--heap-profile-rate' needs a positive number of bytes with '--heap-profile'".into(),
                ));
            }
            _ => {}
        }
        if options.mem_profile_interval_ms.is_some() && options.mem_profile.is_none() {
            return Err(BadOption("'--mem-profile-interval' needs '--mem-profile FILE'".to_owned()));
        }
        Ok(options)
    }

    /// True when nothing was asked for: lua.c then runs the REPL on a terminal, or stdin.
    pub fn nothing_to_do(&self) -> bool {
        self.script.is_none() && !self.version && !self.actions.iter().any(|a| matches!(a, Action::Execute(_)))
    }
}

/// Whether the options are parsed as lua.c 5.1 and luajit.c parse them.
const LUA51_OPTIONS: bool = cfg!(any(feature = "lua51", feature = "luajit"));

/// What `-l value` requires into which global, as lua.c's `dolibrary` of the embedded version:
/// Lua 5.4 and 5.5 take `g=mod`, and without `=` drop a version suffix from the global's name
/// (`-l mod-2` sets `mod`); 5.2 and 5.3 use the value for both; 5.1 and LuaJIT only require it.
fn library(value: &str) -> Action {
    let module = value.to_owned();
    if cfg!(any(feature = "lua51", feature = "luajit")) {
        return Action::Require { global: None, module };
    }
    if !cfg!(any(feature = "lua54", feature = "lua55")) {
        return Action::Require { global: Some(module.clone()), module };
    }
    match value.split_once('=') {
        Some((global, module)) => Action::Require { global: Some(global.to_owned()), module: module.to_owned() },
        None => {
            let global = value.split_once('-').map_or(value, |(global, _)| global);
            Action::Require { global: Some(global.to_owned()), module }
        }
    }
}

/// `1234`, `64K`, `512M`, `2G` (powers of 1024).
pub fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1usize << 10),
        b'M' | b'm' => (&text[..text.len() - 1], 1 << 20),
        b'G' | b'g' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, BadOption> {
        let argv: Vec<String> = std::iter::once("lua-system").chain(args.iter().copied()).map(String::from).collect();
        Options::parse(&argv)
    }

    #[test]
    fn script_stops_option_handling() {
        let o = parse(&["-e", "x=1", "x.lua", "-e", "y"]).unwrap();
        assert_eq!(o.script, Some(3));
        assert_eq!(o.actions, vec![Action::Execute("x=1".into())]);
    }

    #[test]
    fn warnings_option_exists_from_lua_5_4() {
        let parsed = parse(&["-W", "x.lua"]);
        if cfg!(any(feature = "lua54", feature = "lua55")) {
            assert_eq!(parsed.unwrap().actions, vec![Action::WarningsOn]);
        } else {
            assert_eq!(parsed, Err(BadOption("unrecognized option '-W'".into())));
        }
    }

    #[test]
    fn execute_and_require_take_attached_or_next_values() {
        let o = parse(&["-eprint(1)", "-l", "g=mod", "-lm", "-lm-2"]).unwrap();
        let require = |global: Option<&str>, module: &str| Action::Require {
            global: global.map(str::to_owned),
            module: module.to_owned(),
        };
        let expected = if cfg!(any(feature = "lua54", feature = "lua55")) {
            [require(Some("g"), "mod"), require(Some("m"), "m"), require(Some("m"), "m-2")]
        } else if cfg!(any(feature = "lua51", feature = "luajit")) {
            [require(None, "g=mod"), require(None, "m"), require(None, "m-2")]
        } else {
            [require(Some("g=mod"), "g=mod"), require(Some("m"), "m"), require(Some("m-2"), "m-2")]
        };
        assert_eq!(o.actions[0], Action::Execute("print(1)".into()));
        assert_eq!(o.actions[1..], expected);
        assert!(!o.nothing_to_do());
    }

    #[test]
    fn dash_means_stdin_and_double_dash_ends_options() {
        assert_eq!(parse(&["-"]).unwrap().script, Some(1));
        assert_eq!(parse(&["--", "-x"]).unwrap().script, Some(2));
        assert_eq!(parse(&["--"]).unwrap().script, None);
    }

    #[test]
    fn bad_options_are_reported() {
        assert_eq!(parse(&["-x"]).unwrap_err().0, "unrecognized option '-x'");
        assert_eq!(parse(&["-e"]).unwrap_err().0, "'-e' needs argument");
    }

    #[test]
    fn sandbox_options_are_collected_in_order() {
        let o = parse(&["--profile", "observe", "--allow", "gc,pid", "--deny", "hostname", "--memory-limit", "64M"])
            .unwrap();
        assert_eq!(o.profile.as_deref(), Some("observe"));
        assert_eq!(o.permission_changes, vec![(true, "gc".into()), (true, "pid".into()), (false, "hostname".into())]);
        assert_eq!(o.memory_limit, Some(64 << 20));
        assert!(parse(&["--memory-limit", "lots"]).is_err());
        assert_eq!(parse(&["--cpu-limit", "1.5"]).unwrap().cpu_limit, Some(std::time::Duration::from_millis(1500)));
        for bad in ["0", "-1", "nan", "inf", "soon"] {
            assert!(parse(&["--cpu-limit", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes_take_suffixes() {
        assert_eq!(parse_bytes("1234"), Some(1234));
        assert_eq!(parse_bytes("2K"), Some(2048));
        assert_eq!(parse_bytes("3g"), Some(3 << 30));
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999999999999G"), None);
    }

    #[test]
    fn state_option_chooses_the_state() {
        assert_eq!(parse(&["--state", "plain", "x.lua"]).unwrap().state, StateKind::Plain);
        assert_eq!(parse(&["x.lua"]).unwrap().state, StateKind::Accounted);
        assert!(parse(&["--state", "other"]).is_err());
    }

    #[test]
    fn help_is_the_runners_own_option() {
        assert!(parse(&["--help"]).unwrap().help);
        assert!(usage("lua").starts_with("usage: lua [options]"));
    }

    #[test]
    fn execute_takes_an_option_as_its_code_only_as_lua_5_1_does() {
        let parsed = parse(&["-e", "-v"]);
        if LUA51_OPTIONS {
            assert_eq!(parsed.unwrap().actions, vec![Action::Execute("-v".into())]);
        } else {
            assert_eq!(parsed, Err(BadOption("'-e' needs argument".into())));
        }
    }

    #[test]
    fn interactive_implies_version() {
        let o = parse(&["-i"]).unwrap();
        assert!(o.interactive && o.version);
    }
}
