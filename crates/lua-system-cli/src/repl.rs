//! The interactive loop, as lua.c's: a line is first tried as an expression (`return line`) and
//! its values printed with `print`; an incomplete statement asks for more lines (`>>`).

use lua_system::mlua::{self, Function, Lua, MultiValue};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::{PROGNAME, report};

pub fn run(lua: &Lua) {
    let mut editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("{PROGNAME}: cannot start the interactive mode: {e}");
            return;
        }
    };
    while let Some(chunk) = read_chunk(lua, &mut editor) {
        match chunk {
            Ok(function) => match function.call::<MultiValue>(()) {
                Ok(values) if !values.is_empty() => print_values(lua, values),
                Ok(_) => {}
                Err(error) => eprintln!("{PROGNAME}: {}", report(&error)),
            },
            Err(error) => eprintln!("{PROGNAME}: {}", report(&error)),
        }
    }
    println!();
}

/// Reads lines until they compile, or fail to for another reason than being incomplete.
/// `None` at end of input.
fn read_chunk(lua: &Lua, editor: &mut DefaultEditor) -> Option<mlua::Result<Function>> {
    let mut source = loop {
        match editor.readline("> ") {
            Ok(line) => break line,
            Err(ReadlineError::Interrupted) => continue,
            Err(_) => return None,
        }
    };
    let _ = editor.add_history_entry(source.as_str());
    if let Ok(function) = lua.load(format!("return {source}")).set_name("=stdin").into_function() {
        return Some(Ok(function));
    }
    loop {
        match lua.load(source.as_str()).set_name("=stdin").into_function() {
            Err(mlua::Error::SyntaxError { incomplete_input: true, .. }) => match editor.readline(">> ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    source.push('\n');
                    source.push_str(&line);
                }
                Err(_) => return None,
            },
            result => return Some(result),
        }
    }
}

fn print_values(lua: &Lua, values: MultiValue) {
    let result = lua.globals().get::<Function>("print").and_then(|print| print.call::<()>(values));
    if let Err(error) = result {
        eprintln!("{PROGNAME}: error calling 'print' ({})", report(&error));
    }
}
