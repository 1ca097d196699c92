//! Statistics of the process's allocator: jemalloc's when it is the global allocator (feature
//! `jemalloc` and `#[global_allocator] static A: lua_system::Jemalloc`, as in the runner),
//! glibc malloc's otherwise. With the feature, jemalloc counts as the process's allocator once
//! it has served an allocation: a host that enables the feature without installing it (or a
//! test binary of a workspace where another crate enables it) still gets glibc's figures.
//!
//! Both are mapped onto Go's heap terms, in bytes:
//! * `in_use`: memory in pages (jemalloc: active pages) or chunks (glibc) holding live blocks;
//! * `idle`: memory the allocator holds with no live block in it (jemalloc: dirty, muzzy and
//!   retained pages; glibc: free chunks);
//! * `released`: the part of `idle` handed back to the OS while still reserved (jemalloc: muzzy
//!   pages, advised away, and retained ones). glibc gives trimmed memory back outright (it
//!   leaves its heap figures) and keeps no count of what `malloc_trim` advises away, so 0.
//! * `metadata`: the allocator's own bookkeeping (jemalloc: `stats.metadata`; glibc keeps its
//!   chunk headers inside `in_use`, so 0).

use crate::text::Text;

#[derive(Clone, Copy, Debug)]
pub(crate) struct AllocatorStats {
    pub in_use: u64,
    pub idle: u64,
    pub released: u64,
    pub metadata: u64,
    pub source: &'static str,
}

pub(crate) fn read() -> Result<AllocatorStats, Text> {
    #[cfg(feature = "jemalloc")]
    if jemalloc::in_use() {
        return jemalloc::read();
    }
    system()
}

#[cfg(feature = "jemalloc")]
mod jemalloc {
    use std::sync::OnceLock;

    use tikv_jemalloc_ctl::{Access, AsName, Mib, epoch, stats};

    use super::AllocatorStats;
    use crate::text::{Text, text};

    /// Controls resolved once: looking a name up costs more than reading it.
    struct Controls {
        epoch: tikv_jemalloc_ctl::epoch_mib,
        active: stats::active_mib,
        metadata: stats::metadata_mib,
        retained: stats::retained_mib,
        dirty_pages: Mib<[usize; 4]>,
        muzzy_pages: Mib<[usize; 4]>,
        page: usize,
    }

    fn resolve() -> tikv_jemalloc_ctl::Result<Controls> {
        Ok(Controls {
            epoch: epoch::mib()?,
            active: stats::active::mib()?,
            metadata: stats::metadata::mib()?,
            retained: stats::retained::mib()?,
            // MALLCTL_ARENAS_ALL (4096): the sum over all arenas.
            dirty_pages: b"stats.arenas.4096.pdirty\0".name().mib()?,
            muzzy_pages: b"stats.arenas.4096.pmuzzy\0".name().mib()?,
            page: b"arenas.page\0".name().read()?,
        })
    }

    /// Whether jemalloc is the global allocator: a probe block allocated through Rust's global
    /// allocator shows in jemalloc's count of this thread's allocations. (jemalloc allocates a
    /// little for itself once its statistics are read, so its totals cannot tell.) Decided
    /// once: the global allocator cannot change.
    pub(super) fn in_use() -> bool {
        const PROBE: usize = 1 << 20;
        static IN_USE: OnceLock<bool> = OnceLock::new();
        *IN_USE.get_or_init(|| {
            let Ok(counter) = tikv_jemalloc_ctl::thread::allocatedp::read() else { return false };
            let before = counter.get();
            let probe = std::hint::black_box(Vec::<u8>::with_capacity(PROBE));
            let after = counter.get();
            drop(probe);
            after.wrapping_sub(before) >= PROBE as u64
        })
    }

    fn failed(e: &dyn std::fmt::Display) -> Text {
        text!("jemalloc statistics are unreadable: {e}")
    }

    pub(super) fn read() -> Result<AllocatorStats, Text> {
        static CONTROLS: OnceLock<Result<Controls, String>> = OnceLock::new();
        let c = CONTROLS.get_or_init(|| resolve().map_err(|e| e.to_string())).as_ref().map_err(|e| failed(e))?;
        // jemalloc publishes fresh statistics when the epoch advances.
        c.epoch.advance().map_err(|e| failed(&e))?;
        let read = |mib: &Mib<[usize; 4]>| -> Result<usize, Text> { mib.read().map_err(|e| failed(&e)) };
        let (dirty, muzzy) = (read(&c.dirty_pages)?, read(&c.muzzy_pages)?);
        let active = c.active.read().map_err(|e| failed(&e))?;
        let metadata = c.metadata.read().map_err(|e| failed(&e))?;
        let retained = c.retained.read().map_err(|e| failed(&e))?;
        Ok(AllocatorStats {
            in_use: active as u64,
            idle: ((dirty + muzzy) * c.page + retained) as u64,
            released: (muzzy * c.page + retained) as u64,
            metadata: metadata as u64,
            source: "jemalloc",
        })
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn system() -> Result<AllocatorStats, Text> {
    // SAFETY: `mallinfo2` only reads glibc's arenas, under their locks.
    let info = unsafe { libc::mallinfo2() };
    Ok(AllocatorStats {
        in_use: (info.uordblks + info.hblkhd) as u64,
        idle: info.fordblks as u64,
        released: 0,
        metadata: 0,
        source: "glibc",
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn system() -> Result<AllocatorStats, Text> {
    Err(crate::text::text!(
        "the process allocator keeps no statistics the module can read (install lua_system::Jemalloc \
         as the global allocator, with the `jemalloc` feature)"
    ))
}
