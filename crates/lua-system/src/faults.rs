//! Faults that tests inject (feature `fault-injection`), to show the module answers a correct
//! value or `nil, message` when the machine around it misbehaves, and never panics across the
//! FFI boundary. Without the feature, [`active`] is a constant `false` and every check compiles
//! away.

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// `/proc/self/status` cannot be read (as in a restricted container).
    ProcUnreadable,
    /// The host name cannot be read.
    HostnameUnreadable,
    /// The state's allocator answers NULL to every growth.
    AllocatorFails,
    /// A module function panics.
    Panic,
}

#[cfg(feature = "fault-injection")]
static ACTIVE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Turns `fault` on or off, for the whole process.
#[cfg(feature = "fault-injection")]
pub fn inject(fault: Fault, on: bool) {
    use std::sync::atomic::Ordering::SeqCst;
    let bit = 1 << fault as u8;
    if on {
        ACTIVE.fetch_or(bit, SeqCst)
    } else {
        ACTIVE.fetch_and(!bit, SeqCst)
    };
}

/// Whether `fault` is injected now.
#[inline(always)]
pub(crate) fn active(fault: Fault) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        ACTIVE.load(std::sync::atomic::Ordering::Relaxed) & (1 << fault as u8) != 0
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = fault;
        false
    }
}
