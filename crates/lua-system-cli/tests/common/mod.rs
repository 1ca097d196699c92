//! What the runner's integration tests share: running it as a process, reading its output.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn runner() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lua-system"));
    command.current_dir(repo_root()).env_remove("LUA_INIT").env_remove("LUA_INIT_5_4");
    command
}

pub fn run(args: &[&str]) -> Output {
    runner().args(args).output().unwrap()
}

pub fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child =
        runner().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `source` to a file named `name` in a directory of this test process. Tests run in
/// parallel and may write the same script: each writes its own copy and renames it into place,
/// so a runner started by another test never reads a half-written file.
pub fn temp_script(name: &str, source: &str) -> PathBuf {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("lua-system-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let copy = dir.join(format!(".{name}.{}", COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(&copy, source).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    path
}

/// The address a runner started with `--listen 127.0.0.1:0` serves, read from the first line of
/// its stderr, which starts with the program's name as it was called (here, its path).
pub fn served_address(first_line: &str) -> String {
    first_line
        .strip_prefix(env!("CARGO_BIN_EXE_lua-system"))
        .and_then(|rest| rest.strip_prefix(": serving http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("the runner says where it serves: {first_line}"))
        .to_owned()
}
