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
            format!("the heap profile has nothing to draw: no {} ({})", figure(view), view.name()),
        ));
    }
    let mut options = Options::default();
    // The total in the picture itself, not only in the frames' tooltips.
    options.title = title(profile, view);
    options.subtitle = Some(if profile.rate <= 1 {
        "every allocation recorded".to_owned()
    } else {
        format!("estimated from sampled allocations, one per {} allocated on average", size(profile.rate as i64))
    });
    options.count_name = view.unit().to_owned();
    options.colors = Palette::Basic(BasicPalette::Mem);
    // A function keeps its colour from one profile to the next.
    options.hash = true;
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
}

/// The view's total as a sentence: `Lua heap: 12.40 MiB in use`.
fn title(profile: &HeapProfile, view: View) -> String {
    let total = profile.total(view);
    match view {
        View::InuseSpace => format!("Lua heap: {} in use", size(total)),
        View::InuseObjects => format!("Lua heap: {total} objects in use"),
        View::AllocSpace => format!("Lua heap: {} allocated since profiling started", size(total)),
        View::AllocObjects => format!("Lua heap: {total} objects allocated since profiling started"),
    }
}

/// Bytes in the unit that reads best: B, KiB, MiB or GiB.
fn size(bytes: i64) -> String {
    let value = bytes as f64;
    match bytes {
        ..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", value / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.2} MiB", value / 1_048_576.0),
        _ => format!("{:.2} GiB", value / 1_073_741_824.0),
    }
}

fn figure(view: View) -> &'static str {
    match view {
        View::InuseSpace => "in-use bytes",
        View::InuseObjects => "in-use objects",
        View::AllocSpace => "allocated bytes",
        View::AllocObjects => "allocated objects",
    }
}
