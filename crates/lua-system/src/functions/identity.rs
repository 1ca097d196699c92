//! The host's identity: `hostname()` and `pid()`.
//!
//! * `hostname()` asks the kernel (`uname(2)`) on every call: no cache can be told that the host
//!   was renamed without a system call of its own, so a renamed host is always seen. The name is
//!   returned as the kernel holds it: bytes, UTF-8 or not (Lua strings are bytes; Go returns the
//!   bytes too).
//! * `pid()` is cached: a process's id changes only in a child after `fork`, and a `fork`
//!   handler clears the cache in the child (`ffi/fork.rs`), so the child asks the kernel again.
//!   (A child made by a raw `clone(2)` system call, bypassing the C library's `fork`, would
//!   keep the parent's cached id; nothing in a Lua host does that.)

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};

use crate::faults::{self, Fault};
use crate::ffi::{Call, fork};
use crate::functions::answer::{Failure, Reply};
use crate::state::StateRecord;
use crate::text::{Text, text};

/// `system.hostname()`: the node name from `uname(2)`.
pub(crate) fn hostname(_call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    if faults::active(Fault::HostnameUnreadable) {
        return Err(Failure::Failed(text!("cannot read the host name: Operation not permitted (os error 1)")));
    }
    let name = rustix::system::uname();
    Ok(Reply::Bytes(Text::from_bytes(name.nodename().to_bytes())))
}

/// The process id; 0 until read (or again in a forked child).
static PID: AtomicI32 = AtomicI32::new(0);

/// `system.pid()`: `getpid(2)`, cached until the next `fork`.
pub(crate) fn pid(_call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(i64::from(current_pid())))
}

/// Whether the fork handler is registered: only then may the pid be cached.
static CACHEABLE: LazyLock<bool> = LazyLock::new(|| fork::run_in_children(forget_pid));

extern "C" fn forget_pid() {
    PID.store(0, Relaxed);
}

fn current_pid() -> i32 {
    match PID.load(Relaxed) {
        0 => {
            let pid = rustix::process::getpid().as_raw_nonzero().get();
            if *CACHEABLE {
                PID.store(pid, Relaxed);
            }
            pid
        }
        pid => pid,
    }
}
