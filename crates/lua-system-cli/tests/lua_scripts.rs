//! Runs each Lua test script of `tests/lua/` through the runner, as a user would:
//! `lua-system tests/lua/NAME_test.lua`, in both of the runner's states: the accounted one (the
//! module's allocator, exact) and the plain one (mlua's allocator, the module interposed). A
//! script exits non-zero if any of its cases fails. (The third host, system.so in stock
//! interpreters, runs them in scripts/test-interpreters.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn run_script(name: &str) {
    for state in ["accounted", "plain"] {
        run_script_in(name, state);
    }
}

fn run_script_in(name: &str, state: &str) {
    let root = repo_root();
    let script = root.join("tests/lua").join(format!("{name}_test.lua"));
    let output = Command::new(env!("CARGO_BIN_EXE_lua-system"))
        .args(["--state", state])
        .arg(&script)
        .env("LUA_PATH", format!("{}/tests/lua/?.lua;;", root.display()))
        .current_dir(&root)
        .output()
        .expect("run lua-system");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}_test.lua ({state}) failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(" passed, 0 failed"), "{name}_test.lua ({state}) did not finish:\n{stdout}\n{stderr}");
}

macro_rules! lua_tests {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { run_script(stringify!($name)); } )*

        /// Every script in tests/lua is listed above: none is silently skipped.
        #[test]
        fn every_script_is_listed() {
            let listed = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(repo_root().join("tests/lua")).unwrap() {
                let file = entry.unwrap().file_name().into_string().unwrap();
                if let Some(name) = file.strip_suffix("_test.lua") {
                    assert!(listed.contains(&name), "tests/lua/{file} is not listed in lua_scripts.rs");
                }
            }
        }
    };
}

lua_tests!(contract, memory, gc, runtime, host, bad_input, finalizer, limit, metrics, cycles, pacing, heap_profile);
