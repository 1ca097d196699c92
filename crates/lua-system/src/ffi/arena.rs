//! A state's own jemalloc arena: where a state with a memory limit allocates, so that the limit
//! bounds what the state makes the process hold resident, not only its live bytes.
//!
//! Live bytes alone do not bound resident memory: a script that fills the heap with objects of
//! one size class, keeps one in sixteen and drops the rest, then does the same with the next
//! class, keeps its live heap small while every slab it touched stays resident (BENCHMARKS.md,
//! "Resident memory under a memory limit"). Here the state's blocks come from an arena of its
//! own, whose pages are purged as soon as they hold nothing (no dirty pages are kept), and whose
//! active pages jemalloc counts in an atomic the module reads on each allocation: the state's
//! resident memory. An allocation that would take it past the limit is refused after a purge
//! (Lua then collects and retries, as at any memory limit).
//!
//! Blocks the state held before it got its arena stay where they were: the set of the arena's
//! blocks tells them apart on every free and resize (a bitmap, `block_set.rs`).
//!
//! jemalloc comes from tikv-jemalloc-sys (feature `jemalloc`), with its own prefixed symbols:
//! the arena works whatever the process's global allocator is.

use std::cell::UnsafeCell;
use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tikv_jemalloc_sys as je;

use super::block_set::BlockSet;

/// One state's arena, its explicit thread cache, and the set of its blocks.
pub(crate) struct Arena {
    index: u32,
    tcache: u32,
    flags: c_int,
    /// jemalloc's count of the arena's active pages (`experimental.arenas.<i>.pactivep`).
    active_pages: *const AtomicUsize,
    page: usize,
    /// Bytes of one slab of every small size class ([`slab_floor`]): what any arena holds once
    /// it has served each class, not charged to the state.
    floor: usize,
    blocks: UnsafeCell<BlockSet>,
}

// SAFETY: the pointer is to an atomic jemalloc keeps for the arena's life (this value's); the
// set is touched only by the state's allocator, which Lua calls from one thread at a time.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

fn mallctl_read<T: Copy>(name: &CStr) -> Option<T> {
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: `value` has room for a `T`, the size jemalloc checks against the control's.
    let status = unsafe { je::mallctl(name.as_ptr(), value.as_mut_ptr().cast(), &mut len, ptr::null_mut(), 0) };
    // SAFETY: written in full when the call succeeded with the size asked for.
    (status == 0 && len == std::mem::size_of::<T>()).then(|| unsafe { value.assume_init() })
}

fn mallctl_write<T: Copy>(name: &CStr, mut value: T) -> bool {
    // SAFETY: `value` is a `T` of the size given.
    let status = unsafe {
        je::mallctl(
            name.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            (&mut value as *mut T).cast(),
            std::mem::size_of::<T>(),
        )
    };
    status == 0
}

/// Bytes of one slab of each small size class (`arenas.bin.<i>.slab_size`), the same for every
/// arena of the process; `None` if jemalloc does not say.
fn slab_floor() -> Option<usize> {
    static FLOOR: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *FLOOR.get_or_init(|| {
        let bins: u32 = mallctl_read(c"arenas.nbins")?;
        (0..bins).map(|bin| mallctl_read::<usize>(&control(format!("arenas.bin.{bin}.slab_size")))).sum()
    })
}

fn control(name: String) -> std::ffi::CString {
    std::ffi::CString::new(name).expect("no NUL in a control name")
}

impl Arena {
    /// A new arena, keeping no dirty pages, with a thread cache of its own. `None` when jemalloc
    /// refuses (no memory, or the 4,095 arenas of a process are taken).
    pub(crate) fn new() -> Option<Arena> {
        let index: u32 = mallctl_read(c"arenas.create")?;
        // The control tree knows a new arena's statistics once refreshed.
        mallctl_write(c"epoch", 1u64);
        let tcache: Option<u32> = mallctl_read(c"tcache.create");
        let active: Option<*const AtomicUsize> =
            mallctl_read(&control(format!("experimental.arenas.{index}.pactivep")));
        let page: Option<usize> = mallctl_read(c"arenas.page");
        let (Some(tcache), Some(active), Some(page), Some(floor)) = (tcache, active, page, slab_floor()) else {
            mallctl_write(&control(format!("arena.{index}.destroy")), ());
            return None;
        };
        // Freed pages go back to the kernel at once: what the arena holds is what is active.
        for decay in ["dirty_decay_ms", "muzzy_decay_ms"] {
            mallctl_write(&control(format!("arena.{index}.{decay}")), 0isize);
        }
        Some(Arena {
            index,
            tcache,
            flags: je::MALLOCX_ARENA(index as usize) | je::MALLOCX_TCACHE(tcache as usize),
            active_pages: active,
            page,
            floor,
            blocks: UnsafeCell::new(BlockSet::default()),
        })
    }

    /// Bytes of the arena's active pages: what the state's blocks (and the slabs they sit in,
    /// and its thread cache) keep resident.
    #[inline(always)]
    pub(crate) fn resident_bytes(&self) -> usize {
        // SAFETY: jemalloc's counter for this arena, alive as long as the arena (`self`).
        unsafe { (*self.active_pages).load(Relaxed) * self.page }
    }

    /// The resident bytes the memory limit counts: the arena's active pages beyond one slab of
    /// each small size class. Those first slabs are the arena's own minimum, the same for any
    /// state whatever it keeps (a slab of 64-byte blocks is 32 KiB with the runner's options:
    /// charging them would leave a state limited to its current heap no room to call even a
    /// finalizer); the pages a fragmenting script keeps beyond them are charged in full.
    #[inline(always)]
    pub(crate) fn charged_bytes(&self) -> usize {
        self.resident_bytes().saturating_sub(self.floor)
    }

    /// Gives back what the thread cache holds and every page that holds nothing.
    pub(crate) fn purge(&self) {
        mallctl_write(c"tcache.flush", self.tcache);
        mallctl_write(&control(format!("arena.{}.purge", self.index)), ());
    }

    /// The set of the arena's blocks; only from the state's allocator.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn blocks(&self) -> &mut BlockSet {
        // SAFETY: per the contract, no other reference to the set exists meanwhile.
        unsafe { &mut *self.blocks.get() }
    }

    /// Whether `block` is one of the arena's.
    ///
    /// # Safety
    /// From the state's allocator.
    #[inline(always)]
    pub(crate) unsafe fn holds(&self, block: *mut c_void) -> bool {
        // SAFETY: per the contract.
        unsafe { self.blocks() }.contains(block as usize)
    }

    /// A new block of `size` bytes (non-zero), NULL when jemalloc or the set has no memory.
    ///
    /// # Safety
    /// From the state's allocator.
    #[inline(always)]
    pub(crate) unsafe fn alloc(&self, size: usize) -> *mut c_void {
        // SAFETY: a non-zero size and this arena's flags.
        let block = unsafe { je::mallocx(size, self.flags) };
        // SAFETY: per the contract.
        if !block.is_null() && unsafe { self.blocks() }.insert(block as usize).is_err() {
            // SAFETY: allocated just above with these flags and size.
            unsafe { je::sdallocx(block, size, self.flags) };
            return ptr::null_mut();
        }
        block
    }

    /// Resizes one of the arena's blocks to `size` (non-zero) bytes from `old_size`; NULL (the
    /// block unchanged) when there is no memory.
    ///
    /// # Safety
    /// From the state's allocator; `block` is the arena's, allocated or last resized to
    /// `old_size`.
    #[inline(always)]
    pub(crate) unsafe fn realloc(&self, block: *mut c_void, old_size: usize, size: usize) -> *mut c_void {
        // SAFETY: per the contract. In place first, the set unchanged: only when the block ends
        // in `size`'s own size class, since it will be freed as a block of `size` bytes.
        if unsafe { je::xallocx(block, size, 0, self.flags) == je::nallocx(size, self.flags) } {
            return block;
        }
        // SAFETY: per the contract; the new block is tracked (or not made), then the old one
        // is copied and freed.
        unsafe {
            let moved = self.alloc(size);
            if moved.is_null() {
                return moved;
            }
            ptr::copy_nonoverlapping(block.cast::<u8>(), moved.cast::<u8>(), old_size.min(size));
            self.free(block, old_size);
            moved
        }
    }

    /// Frees `block` of `size` bytes if it is one of the arena's; false otherwise (it is then
    /// the state's previous allocator's to free).
    ///
    /// # Safety
    /// From the state's allocator; `block` was allocated or last resized to `size`.
    #[inline(always)]
    pub(crate) unsafe fn free(&self, block: *mut c_void, size: usize) -> bool {
        // SAFETY: per the contract.
        unsafe {
            if !self.blocks().remove(block as usize) {
                return false;
            }
            je::sdallocx(block, size, self.flags);
        }
        true
    }
}

/// Where a state's record keeps its arena: none until the state gets a memory limit.
#[derive(Default)]
pub(crate) struct ArenaSlot(std::sync::OnceLock<Arena>);

impl ArenaSlot {
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&Arena> {
        self.0.get()
    }

    /// The arena, made now if there is none; `None` if jemalloc could not make one.
    pub(crate) fn get_or_make(&self) -> Option<&Arena> {
        if self.0.get().is_none()
            && let Some(arena) = Arena::new()
        {
            let _ = self.0.set(arena);
        }
        self.0.get()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Every block is freed by now (the state is closed): the arena and its cache go.
        mallctl_write(c"tcache.destroy", self.tcache);
        mallctl_write(&control(format!("arena.{}.destroy", self.index)), ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arena_counts_its_pages() {
        let arena = Arena::new().expect("an arena");
        let before = arena.resident_bytes();
        // SAFETY: one thread plays the state's allocator.
        let blocks: Vec<_> = (0..1000).map(|_| unsafe { arena.alloc(1000) }).collect();
        let during = arena.resident_bytes();
        assert!(during >= before + 1000 * 1000, "{before} -> {during}");
        for block in blocks {
            // SAFETY: allocated above with this size.
            assert!(unsafe { arena.free(block, 1000) });
        }
        arena.purge();
        assert!(arena.resident_bytes() < during / 4, "{during} -> {}", arena.resident_bytes());
    }

    /// The limit is not charged one slab of each small class: a block of every class leaves
    /// nothing charged once the thread cache is purged, a class filled past its first slab is
    /// charged the rest.
    #[test]
    fn an_arenas_first_slabs_are_not_charged() {
        let arena = Arena::new().expect("an arena");
        let bins: u32 = mallctl_read(c"arenas.nbins").expect("nbins");
        let size = |bin: u32| mallctl_read::<usize>(&control(format!("arenas.bin.{bin}.size"))).expect("size");
        // SAFETY: one thread plays the state's allocator; each block is freed with its size.
        unsafe {
            let one_each: Vec<_> = (0..bins).map(|bin| (arena.alloc(size(bin)), size(bin))).collect();
            // The thread cache's fills are given back first, as the limit does before refusing.
            arena.purge();
            assert!(arena.resident_bytes() > 0);
            assert_eq!(arena.charged_bytes(), 0, "resident {}", arena.resident_bytes());
            let many: Vec<_> = (0..100_000).map(|_| arena.alloc(64)).collect();
            assert!(arena.charged_bytes() >= 100_000 * 64 - slab_floor().unwrap(), "{}", arena.charged_bytes());
            for block in many {
                arena.free(block, 64);
            }
            for (block, size) in one_each {
                arena.free(block, size);
            }
        }
        eprintln!("floor: {} bytes", slab_floor().unwrap());
    }
}
