//! What a module function answers: a [`Reply`] on success, a [`Failure`] otherwise. The
//! trampoline (`ffi/call.rs`) pushes `value, nil` or `nil, message`; the message of every
//! failure is formatted here, in one place, with the function's name (as luv's `luv_error`
//! formats every failure of luv).

use std::ffi::c_int;

use crate::ffi::call::{Out, Scalar, Value};
use crate::figures::mem_stats::MemStats;
use crate::figures::metrics::Metrics;
use crate::text::{Text, text};

/// A successful answer. `Copy`: it is pushed after the function returned, so a memory error
/// raised while pushing skips no destructor.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    Integer(i64),
    Boolean(bool),
    /// A Lua string: bytes as they are (a host name is not necessarily UTF-8).
    Bytes(Text),
    /// The statistics table; `true` to fill the table passed as argument 1 instead of a new one.
    Stats(MemStats, bool),
    /// The figures in the Prometheus text format, built in a Lua buffer (of any length).
    Metrics(Metrics),
}

/// Why a call failed. The message names the function and, for arguments, their position, in
/// Lua's own wording.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failure {
    /// `bad argument #n to 'name' (problem)`.
    BadArgument { n: c_int, problem: Text },
    /// `permission denied: system.name`.
    Denied,
    /// `name: message`: the operation was tried and failed.
    Failed(Text),
}

impl Failure {
    /// The message the script receives from function `name`.
    pub(crate) fn message(&self, name: &str) -> Text {
        match self {
            Failure::BadArgument { n, problem } => text!("bad argument #{n} to '{name}' ({problem})"),
            Failure::Denied => text!("permission denied: system.{name}"),
            Failure::Failed(message) => text!("{name}: {message}"),
        }
    }
}

impl Value for Reply {
    fn scalar(&self) -> Option<Scalar> {
        match self {
            Reply::Integer(value) => Some(Scalar::Integer(*value)),
            Reply::Boolean(value) => Some(Scalar::Boolean(*value)),
            _ => None,
        }
    }

    fn refills_argument(&self) -> bool {
        matches!(self, Reply::Stats(_, true))
    }

    fn push(&self, out: &mut Out) {
        match self {
            Reply::Integer(value) => out.integer(*value),
            Reply::Boolean(value) => out.boolean(*value),
            Reply::Bytes(text) => out.bytes(text.as_bytes()),
            Reply::Stats(stats, true) => out.refill_argument(|table| stats.write(table)),
            Reply::Stats(stats, false) => out.table(MemStats::LUA_FIELDS, |table| stats.write(table)),
            // Each line is inline text: nothing here owns a destructor if Lua raises.
            Reply::Metrics(metrics) => out.buffer(|add| metrics.write_prometheus(|line| add(line.as_bytes()))),
        }
    }
}
