//! The host: `hostname()` and `pid()`, each read from the kernel on every call, so a renamed
//! host or a forked child answers correctly.

use crate::ffi::{Call, Reply};
use crate::text::{Text, text};

/// `system.hostname()`: the node name from `uname(2)`.
pub(crate) fn hostname(call: &Call<'_>) -> Result<Reply, Text> {
    let _ = call;
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    Ok(Reply::Text(text!("{name}")))
}

/// `system.pid()`: `getpid(2)`.
pub(crate) fn pid(call: &Call<'_>) -> Result<Reply, Text> {
    let _ = call;
    Ok(Reply::Integer(rustix::process::getpid().as_raw_nonzero().get() as i64))
}
