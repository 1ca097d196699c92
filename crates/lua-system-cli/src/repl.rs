//! The interactive loop, as lua.c's `doREPL` of the embedded version: a line is first tried as
//! an expression (`return line;`, from 5.3 on) and its values printed with `print`; `=expr` is
//! `return expr` (up to 5.4); an incomplete statement asks for more lines (`>>`); `_PROMPT` and
//! `_PROMPT2` set the prompts. Errors are printed as lua.c prints them in the REPL: the message
//! alone.

use std::io::{IsTerminal, Write};

use lua_system::mlua::Lua;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::PROGNAME;
use crate::lua_c::{self, Args, Chunk, Outcome};

pub fn run(lua: &Lua) {
    let mut editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("{PROGNAME}: cannot start the interactive mode: {e}");
            return;
        }
    };
    while let Some(line) = read_line(&mut editor, &prompt(lua, "_PROMPT", "> ")) {
        let result = run_line(lua, &mut editor, line);
        let message = match result {
            Ok(Outcome::Failed(Some(message)) | Outcome::NotLoaded(message) | Outcome::Incomplete(message)) => message,
            Ok(Outcome::Ran | Outcome::Failed(None)) => continue,
            Err(error) => crate::report(&error).into_bytes(),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(&message);
        let _ = writeln!(stderr);
    }
    println!();
}

/// Runs a line as an expression whose values are printed, else as a statement, reading more
/// lines while the statement is incomplete.
fn run_line(lua: &Lua, editor: &mut DefaultEditor, line: String) -> lua_system::mlua::Result<Outcome> {
    let _ = editor.add_history_entry(line.as_str());
    // Up to Lua 5.4, `=expr` stands for `return expr` (5.5 dropped it).
    let line = match line.strip_prefix('=') {
        Some(expression) if !cfg!(feature = "lua55") => format!("return {expression}"),
        _ => line,
    };
    // From Lua 5.3 on, a line is first tried as an expression whose values are printed.
    if cfg!(any(feature = "lua53", feature = "lua54", feature = "lua55")) {
        let expression = format!("return {line};");
        match lua_c::run(lua, Chunk::Code { source: expression.as_bytes(), name: "=stdin" }, Args::Given(&[]), true)? {
            Outcome::NotLoaded(_) | Outcome::Incomplete(_) => {}
            outcome => return Ok(outcome),
        }
    }
    let mut source = line;
    loop {
        match lua_c::run(lua, Chunk::Code { source: source.as_bytes(), name: "=stdin" }, Args::Given(&[]), true)? {
            Outcome::Incomplete(message) => match read_line(editor, &prompt(lua, "_PROMPT2", ">> ")) {
                Some(more) => {
                    let _ = editor.add_history_entry(more.as_str());
                    source.push('\n');
                    source.push_str(&more);
                }
                // As lua.c: the end of input in a statement reports its syntax error.
                None => return Ok(Outcome::Incomplete(message)),
            },
            outcome => return Ok(outcome),
        }
    }
}

/// A line, or `None` at the end of input; Ctrl-C drops the line being typed. When stdin is not
/// a terminal, the prompt and then the line read are written to stdout, as lua.c built with
/// readline (Debian's `lua5.x`, and the build Lua's own tests expect) shows them.
fn read_line(editor: &mut DefaultEditor, prompt: &str) -> Option<String> {
    if !std::io::stdin().is_terminal() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(prompt.as_bytes());
        let _ = stdout.flush();
        let mut line = String::new();
        return match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                let _ = stdout.write_all(line.as_bytes());
                line.pop();
                Some(line)
            }
        };
    }
    loop {
        match editor.readline(prompt) {
            Ok(line) => return Some(line),
            Err(ReadlineError::Interrupted) => continue,
            Err(_) => return None,
        }
    }
}

/// lua.c's `get_prompt`: the global `_PROMPT` (`_PROMPT2` for a continued statement), converted
/// as `tostring` would, or the default.
fn prompt(lua: &Lua, global: &str, default: &str) -> String {
    let value: lua_system::mlua::Value = lua.globals().get(global).unwrap_or(lua_system::mlua::Value::Nil);
    if value.is_nil() { default.to_owned() } else { value.to_string().unwrap_or_else(|_| default.to_owned()) }
}
