//! Runs each Lua test script of `tests/lua/` through the runner, as a user would:
//! `lua-system tests/lua/NAME_test.lua`. A script exits non-zero if any of its cases fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn run_script(name: &str) {
    let root = repo_root();
    let script = root.join("tests/lua").join(format!("{name}_test.lua"));
    let output = Command::new(env!("CARGO_BIN_EXE_lua-system"))
        .arg(&script)
        .env("LUA_PATH", format!("{}/tests/lua/?.lua;;", root.display()))
        .current_dir(&root)
        .output()
        .expect("run lua-system");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}_test.lua failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(" passed, 0 failed"), "{name}_test.lua did not finish:\n{stdout}\n{stderr}");
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

lua_tests!(contract, memory, gc, runtime, host, bad_input, finalizer, limit, metrics, cycles, pacing);
