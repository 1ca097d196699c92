//! `require("system")` under the runner beside the other modules of that name: luasystem (whose
//! clock busted uses) and a project's own `system.lua` (docs/runner.md).

mod common;

use std::path::PathBuf;

use common::{run, runner, stderr, stdout, temp_script};

/// A folder of its own for the test `name`, holding a `system.lua` with `source`.
fn project_with_system_lua(name: &str, source: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lua-system-name-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("system.lua"), source).unwrap();
    dir
}

/// Whether Debian's luasystem (package `lua-system`) is installed for Lua 5.4.
/// Whether Debian's luasystem is installed for the runner's Lua (its package ships 5.1 to 5.4;
/// LuaJIT reads 5.1's).
fn luasystem_installed() -> bool {
    let version = match () {
        _ if cfg!(feature = "lua55") => "5.5",
        _ if cfg!(feature = "lua53") => "5.3",
        _ if cfg!(feature = "lua52") => "5.2",
        _ if cfg!(any(feature = "lua51", feature = "luajit")) => "5.1",
        _ => "5.4",
    };
    let found = std::path::Path::new(&format!("/usr/share/lua/{version}/system/init.lua")).exists();
    if !found {
        eprintln!("skipped: luasystem is not installed for Lua {version} (apt-get install lua-system)");
    }
    found
}

#[test]
fn a_projects_own_system_lua_is_run_and_its_fields_are_there_with_ours() {
    let dir = project_with_system_lua("own", "print('the project module runs') return { mine = true, pid = 'theirs' }");
    let output = runner()
        .current_dir(dir)
        .env("LUA_PATH", "./?.lua;;")
        .args(["-e", "local s = require('system') print(s.mine, type(s.pid), s.pid() == require('lua_system').pid())"])
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "the project module runs\ntrue\tfunction\ttrue\n", "{}", stderr(&output));
}

#[test]
fn a_projects_system_lua_that_fails_fails_require_as_in_the_stock_interpreter() {
    let dir = project_with_system_lua("broken", "error('broken module')");
    let output = runner()
        .current_dir(dir)
        .env("LUA_PATH", "./?.lua;;")
        .args(["-e", "print(pcall(require, 'system'))"])
        .output()
        .unwrap();
    assert!(stdout(&output).starts_with("false\t./system.lua:1: broken module"), "{}", stdout(&output));
}

#[test]
fn with_luasystem_installed_require_answers_both_apis() {
    if !luasystem_installed() {
        return;
    }
    let output = run(&[
        "-e",
        "local s = require('system') print(type(s.monotime), type(s.gettime), type(s.sleep), type(s.mem_stats), s.mem_stats().accounting)",
    ]);
    assert_eq!(stdout(&output), "function\tfunction\tfunction\tfunction\texact\n", "{}", stderr(&output));
}

#[test]
fn busted_runs_a_spec_under_the_runner() {
    if !luasystem_installed() || !std::path::Path::new("/usr/bin/busted").exists() {
        return;
    }
    let spec = temp_script(
        "runner_spec.lua",
        r#"describe("under lua-system", function()
  it("sees the module's figures", function()
    assert.is_true(require("system").allocated() > 0)
  end)
  it("fails where a spec fails", function()
    assert.are.equal(1, 2)
  end)
end)
"#,
    );
    let output = runner().args(["/usr/bin/busted", "--output=TAP"]).arg(&spec).output().unwrap();
    let out = stdout(&output);
    assert!(out.contains("ok 1 - under lua-system sees the module's figures"), "{out}\n{}", stderr(&output));
    assert!(out.contains("not ok 2 - under lua-system fails where a spec fails"), "{out}");
    assert_eq!(output.status.code(), Some(1), "busted's status: one failure");
}

#[test]
fn in_the_sandbox_system_is_the_built_in_module_alone() {
    let dir = project_with_system_lua("sandbox", "return { mine = true }");
    let output = runner()
        .current_dir(dir)
        .env("LUA_PATH", "./?.lua;;")
        .args(["--profile", "sandbox", "-e", "local s = require('system') print(s.mine, type(s.mem_stats))"])
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "nil\tfunction\n", "{}", stderr(&output));
}
