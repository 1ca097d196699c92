//! The flamegraph SVG, drawn by inferno from the folded stacks.

use std::io::{self, Write};

use inferno::flamegraph::{self, Options, Palette, color::BasicPalette};

use super::{HeapProfile, View, folded};

pub(super) fn write(profile: &HeapProfile, view: View, out: impl Write) -> io::Result<()> {
    let lines = folded::lines(profile, view);
    if lines.is_empty() {
        // inferno would write an SVG saying so, then fail: fail before writing anything.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the heap profile has nothing to draw: no {} ({})", title(view), view.name()),
        ));
    }
    let mut options = Options::default();
    options.title = format!("Lua heap: {}", title(view));
    options.count_name = view.unit().to_owned();
    options.colors = Palette::Basic(BasicPalette::Mem);
    // A function keeps its colour from one profile to the next.
    options.hash = true;
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
}

fn title(view: View) -> &'static str {
    match view {
        View::InuseSpace => "in-use bytes",
        View::InuseObjects => "in-use objects",
        View::AllocSpace => "allocated bytes",
        View::AllocObjects => "allocated objects",
    }
}
