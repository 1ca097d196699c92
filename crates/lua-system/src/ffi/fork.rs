//! Running code in the child after `fork`.

/// Registers `handler` to run in the child after every `fork(2)` done through the C library.
/// Returns false if it could not be registered (out of memory).
///
/// The handler runs in the child while it is still single-threaded and may only do what is
/// async-signal-safe (storing an atomic is).
pub(crate) fn run_in_children(handler: extern "C" fn()) -> bool {
    // SAFETY: `pthread_atfork` only records the function pointer; `handler` is a plain function
    // valid for the life of the process.
    unsafe { libc::pthread_atfork(None, None, Some(handler)) == 0 }
}
