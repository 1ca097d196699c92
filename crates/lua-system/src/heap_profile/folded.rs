//! Folded stacks, the input of flamegraph tools (Brendan Gregg's `stackcollapse` output): one
//! line per stack, `outer;...;inner value`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::{HeapProfile, View, frame_text};

/// Stands for the stack of a sample recorded without one.
const NO_STACK: &str = "(no stack)";

/// The folded lines of a view, without line breaks: the samples of each stack summed (their
/// object types merged), stacks of figure 0 left out, sorted.
pub(super) fn lines(profile: &HeapProfile, view: View) -> Vec<String> {
    let mut stacks = BTreeMap::<String, i64>::new();
    for sample in &profile.samples {
        let value = profile.scaled(sample).get(view);
        if value == 0 {
            continue;
        }
        let stack = if sample.stack.is_empty() {
            NO_STACK.to_owned()
        } else {
            sample.stack.iter().rev().map(frame_text).collect::<Vec<_>>().join(";")
        };
        *stacks.entry(stack).or_default() += value;
    }
    stacks.into_iter().map(|(stack, value)| format!("{stack} {value}")).collect()
}

pub(super) fn write(profile: &HeapProfile, view: View, mut out: impl Write) -> io::Result<()> {
    let mut text = String::new();
    for line in lines(profile, view) {
        text.push_str(&line);
        text.push('\n');
    }
    out.write_all(text.as_bytes())
}
