//! The interactive loop, as lua.c's `doREPL` of the embedded version: a line is first tried as
//! an expression (`return line;`, from 5.3 on) and its values printed with `print`; `=expr` is
//! `return expr` (up to 5.4); an incomplete statement asks for more lines (`>>`); `_PROMPT` and
//! `_PROMPT2` set the prompts. Errors are printed as lua.c prints them in the REPL: the message
//! alone. A chunk goes into the history whole, its lines joined with newlines, as lua.c saves
//! it: Up recalls the whole chunk, and Enter runs it again.
//!
//! One difference, chosen: Ctrl-C at a prompt (`>` or `>>`) drops what is being typed, the
//! chunk's earlier lines included, and asks again, as most REPLs do (lua's readline lets the
//! signal end the interpreter); Ctrl-D or `os.exit()` ends the session.

use std::io::{IsTerminal, Write};

use lua_system::mlua::Lua;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::lua_c::{self, Args, Chunk, Outcome};

pub fn run(lua: &Lua) {
    let mut editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("{}: cannot start the interactive mode: {e}", crate::progname());
            return;
        }
    };
    loop {
        let line = match read_line(&mut editor, &prompt(lua, "_PROMPT", "> ")) {
            Input::Line(line) => line,
            Input::Interrupted => continue,
            Input::End => break,
        };
        let result = run_line(lua, &mut editor, line);
        let message = match result {
            Ok(Some(Outcome::Failed(Some(message)) | Outcome::NotLoaded(message) | Outcome::Incomplete(message))) => {
                message
            }
            Ok(Some(Outcome::Ran | Outcome::Failed(None)) | None) => continue,
            Err(error) => crate::report(&error).into_bytes(),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(&message);
        let _ = writeln!(stderr);
    }
    println!();
}

/// Runs a line as an expression whose values are printed, else as a statement, reading more
/// lines while the statement is incomplete; `None` if Ctrl-C dropped it. The chunk goes into the
/// history as lua.c's `addreturn` and `multiline` save it: the line when it is an expression,
/// else the whole statement, its lines joined with newlines.
fn run_line(lua: &Lua, editor: &mut DefaultEditor, line: String) -> lua_system::mlua::Result<Option<Outcome>> {
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
            outcome => {
                if !line.is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                return Ok(Some(outcome));
            }
        }
    }
    #[cfg(feature = "lua55")]
    warn_of_a_local(&line);
    let mut source = line;
    let outcome = loop {
        match lua_c::run(lua, Chunk::Code { source: source.as_bytes(), name: "=stdin" }, Args::Given(&[]), true)? {
            Outcome::Incomplete(message) => match read_line(editor, &prompt(lua, "_PROMPT2", ">> ")) {
                Input::Line(more) => {
                    source.push('\n');
                    source.push_str(&more);
                }
                Input::Interrupted => return Ok(None),
                // As lua.c: the end of input in a statement reports its syntax error.
                Input::End => break Outcome::Incomplete(message),
            },
            outcome => break outcome,
        }
    };
    if !source.is_empty() {
        let _ = editor.add_history_entry(source.as_str());
    }
    Ok(Some(outcome))
}

/// What a prompt got.
enum Input {
    Line(String),
    /// Ctrl-C: what was being typed is dropped.
    Interrupted,
    /// The end of input (Ctrl-D on an empty line, or stdin's end).
    End,
}

/// A line, Ctrl-C, or the end of input. When stdin is not a terminal, the prompt and then the
/// line read are written to stdout, as lua.c built with readline (Debian's `lua5.x`, and the
/// build Lua's own tests expect) shows them.
fn read_line(editor: &mut DefaultEditor, prompt: &str) -> Input {
    if !std::io::stdin().is_terminal() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(prompt.as_bytes());
        let _ = stdout.flush();
        let mut line = String::new();
        return match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => Input::End,
            Ok(_) => {
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                let _ = stdout.write_all(line.as_bytes());
                line.pop();
                Input::Line(line)
            }
        };
    }
    match editor.readline(prompt) {
        Ok(line) => Input::Line(line),
        Err(ReadlineError::Interrupted) => Input::Interrupted,
        Err(_) => Input::End,
    }
}

/// lua.c's `get_prompt`: the global `_PROMPT` (`_PROMPT2` for a continued statement), converted
/// as `tostring` would, or the default.
fn prompt(lua: &Lua, global: &str, default: &str) -> String {
    let value: lua_system::mlua::Value = lua.globals().get(global).unwrap_or(lua_system::mlua::Value::Nil);
    if value.is_nil() { default.to_owned() } else { value.to_string().unwrap_or_else(|_| default.to_owned()) }
}

/// Lua 5.5's lua.c (`checklocal`): a statement line that starts with `local` and a blank gets a
/// warning that its local dies with the line.
#[cfg(feature = "lua55")]
fn warn_of_a_local(line: &str) {
    let line = line.trim_start_matches([' ', '\t']);
    if line.strip_prefix("local").is_some_and(|rest| rest.starts_with([' ', '\t'])) {
        eprintln!("warning: locals do not survive across lines in interactive mode");
    }
}
