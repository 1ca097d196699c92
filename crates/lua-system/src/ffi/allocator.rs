//! Statistics of the process's allocator: jemalloc's when it is the global allocator (feature
//! `jemalloc`, as in the runner), glibc malloc's otherwise.
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

#[cfg(feature = "jemalloc")]
pub(crate) fn read() -> Result<AllocatorStats, Text> {
    use crate::text::text;
    use tikv_jemalloc_ctl::{epoch, raw, stats};

    let failed = |e: tikv_jemalloc_ctl::Error| text!("jemalloc statistics are unreadable: {e}");
    // jemalloc publishes its statistics when the epoch advances.
    epoch::advance().map_err(failed)?;
    let active = stats::active::read().map_err(failed)?;
    let metadata = stats::metadata::read().map_err(failed)?;
    let retained = stats::retained::read().map_err(failed)?;
    // SAFETY: these three controls are `size_t` (jemalloc manual, MALLCTL_ARENAS_ALL = 4096).
    let (page, dirty, muzzy) = unsafe {
        (
            raw::read::<usize>(b"arenas.page\0").map_err(failed)?,
            raw::read::<usize>(b"stats.arenas.4096.pdirty\0").map_err(failed)?,
            raw::read::<usize>(b"stats.arenas.4096.pmuzzy\0").map_err(failed)?,
        )
    };
    Ok(AllocatorStats {
        in_use: active as u64,
        idle: ((dirty + muzzy) * page + retained) as u64,
        released: (muzzy * page + retained) as u64,
        metadata: metadata as u64,
        source: "jemalloc",
    })
}

#[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
pub(crate) fn read() -> Result<AllocatorStats, Text> {
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

#[cfg(not(any(feature = "jemalloc", all(target_os = "linux", target_env = "gnu"))))]
pub(crate) fn read() -> Result<AllocatorStats, Text> {
    Err(crate::text::text!(
        "the process allocator keeps no statistics the module can read (build with the `jemalloc` feature)"
    ))
}
