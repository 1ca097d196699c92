//! The heap profiler's records for one state: which allocations were sampled, at which Lua call
//! stack, and which of them are still alive. Go's `runtime.MemProfileRate` model: on average one
//! sample per `rate` bytes allocated, the distance to the next sample drawn from an exponential
//! distribution so that every byte has the same chance (an object of `n` bytes is sampled with
//! probability `1 - exp(-n/rate)`, which is what [`HeapProfile::scaled`] undoes).
//!
//! The allocator calls [`HeapSampler::take`] for every new or resized block (one subtraction and
//! one branch), and [`HeapSampler::forget`] for every block it frees or moves (one load and one
//! branch unless the block may be a sampled one: a 64 Ki-bit filter of sampled addresses). The
//! call stack of a sampled allocation is read by the FFI layer (`ffi/stack_walk.rs`) and handed
//! to [`HeapSampler::record`]. Nothing here allocates in the Lua heap: the profile's memory is
//! the process's, reported by [`HeapSampler::own_bytes`] and never charged to the state's limit.
//!
//! A block resized by Lua (a table's array growing, a buffer, a stack) counts as a new block of
//! its new size and the free of the old one, as `realloc` is `malloc` + `free` to a C heap
//! profiler.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};

use crate::address_hash::{AddressHasher, AddressMap};
use crate::heap_profile::{Frame, HeapProfile, Sample};

/// Go's default `MemProfileRate`: one sample per 512 KiB allocated on average.
pub const DEFAULT_RATE: u64 = 512 * 1024;

/// Distinct (stack, object type) sites kept; later new sites go to one "(other stacks)" site,
/// so the profile's memory stays bounded whatever the script does.
pub const MAX_SITES: usize = 65_536;

/// Frames kept per stack (innermost first); deeper stacks end in a "(more frames)" frame.
pub const MAX_DEPTH: usize = 64;

/// The Lua the library is built for, for the profile's comments.
const LUA: &str = if cfg!(feature = "lua51") {
    "Lua 5.1"
} else if cfg!(feature = "lua52") {
    "Lua 5.2"
} else if cfg!(feature = "lua53") {
    "Lua 5.3"
} else if cfg!(feature = "lua55") {
    "Lua 5.5"
} else if cfg!(feature = "luajit") {
    "LuaJIT"
} else {
    "Lua 5.4"
};

/// Bits in the filter of sampled block addresses.
const FILTER_BITS: usize = 1 << 16;

/// The sampler's random numbers: seeded from `LUA_SYSTEM_HEAP_PROFILE_SEED` if set (a profile
/// that can be reproduced exactly, run after run), else at random as Go's.
fn seeded_rng() -> fastrand::Rng {
    match std::env::var("LUA_SYSTEM_HEAP_PROFILE_SEED").ok().and_then(|seed| seed.parse().ok()) {
        Some(seed) => fastrand::Rng::with_seed(seed),
        None => fastrand::Rng::new(),
    }
}

/// The profiler state of one Lua state.
pub(crate) struct HeapSampler {
    /// Bytes left before the next sample; `i64::MAX` while off, so the allocator's test never
    /// fires without a branch of its own.
    countdown: AtomicI64,
    rate: AtomicU64,
    /// Whether the profiler has started (it then stays).
    started: AtomicBool,
    /// A set bit: some sampled block in use hashes there ([`Records::bit_users`] counts them;
    /// the last one freed clears it). Without clearing, a freed sampled block's address, which
    /// the allocator hands out again at once, would send every later free there down the slow
    /// path.
    filter: Box<[AtomicU64]>,
    records: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    sites: Vec<Site>,
    index: HashMap<(Vec<Frame>, &'static str), usize>,
    /// Sampled blocks still alive: address -> (site, size).
    live: AddressMap<(usize, usize)>,
    /// Bytes the sites' stacks hold (both copies), bounded by [`MAX_STACK_BYTES`].
    stack_bytes: usize,
    /// Sampled blocks in use per filter bit (bits with none are absent).
    bit_users: HashMap<u32, u32, std::hash::BuildHasherDefault<AddressHasher>>,
    rng: Option<fastrand::Rng>,
    started: Option<(SystemTime, Instant)>,
    /// The rate the samples are scaled by: the last one other than 0.
    scale_rate: u64,
    /// Names of functions reachable from `package.loaded` (`string.rep`), by function identity.
    names: HashMap<usize, String>,
}

struct Site {
    stack: Vec<Frame>,
    object_type: &'static str,
    alloc_objects: u64,
    alloc_bytes: u64,
    inuse_objects: u64,
    inuse_bytes: u64,
}

/// The most memory the sites' call stacks may hold: past it, new stacks count under "(other
/// stacks)", as past [`MAX_SITES`]. Without it the bound would be `MAX_SITES` stacks of
/// `MAX_DEPTH` frames with names of 256 bytes, gigabytes that a hostile script can fill with a
/// heap of kilobytes (a hostile review did: 3 GB).
const MAX_STACK_BYTES: usize = 32 << 20;

/// The memory `stack` holds.
fn stack_bytes(stack: &[Frame]) -> usize {
    stack.iter().map(|frame| std::mem::size_of::<Frame>() + frame.function.capacity() + frame.file.capacity()).sum()
}

/// A filter bit's number, from its word and mask.
fn bit_index(word: usize, bit: u64) -> u32 {
    (word * 64) as u32 + bit.trailing_zeros()
}

fn filter_bit(block: usize) -> (usize, u64) {
    // Blocks are 16-byte aligned: mix the bits above.
    let hash = ((block >> 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 16);
    ((hash >> 6) as usize, 1u64 << (hash & 63))
}

impl HeapSampler {
    pub(crate) fn new() -> HeapSampler {
        HeapSampler {
            countdown: AtomicI64::new(i64::MAX),
            rate: AtomicU64::new(0),
            started: AtomicBool::new(false),
            filter: (0..FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            records: Mutex::new(Records::default()),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the profiler has ever run in this state (its allocator functions stay installed:
    /// frees of sampled blocks keep the in-use figures exact after it stops).
    pub(crate) fn started(&self) -> bool {
        self.started.load(Relaxed)
    }

    /// Starts the profiler (once): `names` are the functions' qualified names. Until then,
    /// [`HeapSampler::started`] is false and nothing is sampled.
    pub(crate) fn start(&self, names: HashMap<usize, String>) {
        let mut records = self.records();
        if self.started.load(Relaxed) {
            return;
        }
        records.names = names;
        records.started = Some((SystemTime::now(), Instant::now()));
        self.started.store(true, Relaxed);
    }

    /// Sets the rate (0: stop sampling; 1: every allocation) and returns the previous one.
    /// Samples are scaled by the last rate other than 0 (set it once, as Go's `MemProfileRate`:
    /// a change rescales what was sampled before it).
    pub(crate) fn set_rate(&self, rate: u64) -> u64 {
        let mut records = self.records();
        if rate > 0 {
            records.scale_rate = rate;
        }
        let previous = self.rate.swap(rate, Relaxed);
        let next = if self.started() { Self::draw(&mut records, rate) } else { i64::MAX };
        self.countdown.store(next, Relaxed);
        previous
    }

    /// After a sampled allocation failed: the next sample is drawn afresh (rather than the next
    /// allocation being sampled in its place).
    pub(crate) fn redraw(&self) {
        let mut records = self.records();
        let next = Self::draw(&mut records, self.rate.load(Relaxed));
        self.countdown.store(next, Relaxed);
    }

    /// Bytes to the next sample: exponential with mean `rate`; 0 for every allocation.
    fn draw(records: &mut Records, rate: u64) -> i64 {
        match rate {
            0 => i64::MAX,
            1 => 0,
            rate => {
                let rng = records.rng.get_or_insert_with(seeded_rng);
                // 1 - f64() lies in (0, 1]: its logarithm is finite.
                let distance = -(1.0 - rng.f64()).ln() * rate as f64;
                distance.min(i64::MAX as f64 / 2.0) as i64
            }
        }
    }

    /// Counts `bytes` allocated; whether this allocation is to be sampled.
    #[inline(always)]
    pub(crate) fn take(&self, bytes: usize) -> bool {
        let left = self.countdown.load(Relaxed).wrapping_sub(bytes as i64);
        self.countdown.store(left, Relaxed);
        left < 0
    }

    /// Runs `f` with the qualified function names (read by the stack walk).
    pub(crate) fn with_names<T>(&self, f: impl FnOnce(&HashMap<usize, String>) -> T) -> T {
        f(&self.records().names)
    }

    /// Records a sampled allocation of `size` bytes at `block`, made at `stack` (innermost
    /// first), and draws the distance to the next sample.
    pub(crate) fn record(&self, block: usize, size: usize, object_type: &'static str, mut stack: Vec<Frame>) {
        let mut records = self.records();
        let rate = self.rate.load(Relaxed);
        let next = Self::draw(&mut records, rate);
        self.countdown.store(next, Relaxed);
        if stack.len() > MAX_DEPTH {
            stack.truncate(MAX_DEPTH - 1);
            stack.push(Frame { function: "(more frames)".into(), file: String::new(), line: 0 });
        }
        let site = {
            let records = &mut *records;
            let key = (stack, object_type);
            match records.index.get(&key) {
                Some(&site) => site,
                None if records.sites.len() >= MAX_SITES
                    || records.stack_bytes + 2 * stack_bytes(&key.0) > MAX_STACK_BYTES =>
                {
                    let other =
                        (vec![Frame { function: "(other stacks)".into(), file: String::new(), line: 0 }], "other");
                    let next = records.sites.len();
                    *records.index.entry(other.clone()).or_insert_with(|| {
                        records.sites.push(Site::new(other.0, other.1));
                        next
                    })
                }
                None => {
                    let site = records.sites.len();
                    // Two copies: the site's and the index's key.
                    records.stack_bytes += 2 * stack_bytes(&key.0);
                    records.sites.push(Site::new(key.0.clone(), object_type));
                    records.index.insert(key, site);
                    site
                }
            }
        };
        let counts = &mut records.sites[site];
        counts.alloc_objects += 1;
        counts.alloc_bytes += size as u64;
        counts.inuse_objects += 1;
        counts.inuse_bytes += size as u64;
        match records.live.insert(block, (site, size)) {
            // A block Lua freed without the allocator seeing it cannot happen; if the address
            // came back, the old record is stale: drop it (the address keeps its filter bit).
            Some((old_site, old_size)) => records.sites[old_site].release(old_size),
            None => self.mark(&mut records, block),
        }
    }

    /// Sets `block`'s filter bit, counting the blocks in use that need it.
    fn mark(&self, records: &mut Records, block: usize) {
        let (word, bit) = filter_bit(block);
        *records.bit_users.entry(bit_index(word, bit)).or_insert(0) += 1;
        self.filter[word].fetch_or(bit, Relaxed);
    }

    /// Clears `block`'s filter bit if no other sampled block in use needs it.
    fn unmark(&self, records: &mut Records, block: usize) {
        let (word, bit) = filter_bit(block);
        let index = bit_index(word, bit);
        let Some(users) = records.bit_users.get_mut(&index) else { return };
        *users -= 1;
        if *users == 0 {
            records.bit_users.remove(&index);
            self.filter[word].fetch_and(!bit, Relaxed);
        }
    }

    /// Whether the last [`take`](Self::take) asked for a sample (the countdown went below zero
    /// and no new distance was drawn since).
    pub(crate) fn is_due(&self) -> bool {
        self.countdown.load(Relaxed) < 0
    }

    /// Whether `block` may be a sampled block still in use (a filter: false means certainly not).
    #[inline(always)]
    pub(crate) fn may_be_sampled(&self, block: usize) -> bool {
        let (word, bit) = filter_bit(block);
        self.filter[word].load(Relaxed) & bit != 0
    }

    /// The block at `block` is freed or moved: if it was sampled, it is no longer in use.
    /// Returns its object type, for a resize that is sampled in turn.
    #[inline(always)]
    pub(crate) fn forget(&self, block: usize) -> Option<&'static str> {
        if !self.may_be_sampled(block) {
            return None;
        }
        self.forget_sampled(block)
    }

    #[cold]
    fn forget_sampled(&self, block: usize) -> Option<&'static str> {
        let mut records = self.records();
        let (site, size) = records.live.remove(&block)?;
        self.unmark(&mut records, block);
        records.sites[site].release(size);
        Some(records.sites[site].object_type)
    }

    /// The profile so far.
    pub(crate) fn profile(&self) -> HeapProfile {
        let records = self.records();
        let (time_nanos, duration_nanos) = match records.started {
            Some((wall, monotonic)) => (
                wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64),
                monotonic.elapsed().as_nanos() as i64,
            ),
            None => (0, 0),
        };
        let samples = records
            .sites
            .iter()
            .map(|site| Sample {
                stack: site.stack.clone(),
                object_type: site.object_type,
                alloc_objects: site.alloc_objects,
                alloc_bytes: site.alloc_bytes,
                inuse_objects: site.inuse_objects,
                inuse_bytes: site.inuse_bytes,
                labels: Vec::new(),
            })
            .collect();
        let comments = vec![
            format!("lua-system heap profile of {LUA}"),
            format!(
                "profiler memory: {} bytes of the process heap (not the Lua heap); {} sampled blocks in use",
                self.own_bytes_locked(&records),
                records.live.len()
            ),
        ];
        HeapProfile { rate: records.scale_rate.max(1), samples, time_nanos, duration_nanos, comments }
    }

    /// The profiler's own memory (process heap, not the Lua heap), approximately: its tables'
    /// capacities and the frames' text.
    fn own_bytes_locked(&self, records: &Records) -> usize {
        let frames: usize = records
            .sites
            .iter()
            .flat_map(|site| &site.stack)
            .map(|frame| std::mem::size_of::<Frame>() + frame.function.capacity() + frame.file.capacity())
            .sum();
        let names: usize = records.names.values().map(|name| name.capacity() + 32).sum();
        std::mem::size_of::<Self>()
            + self.filter.len() * 8
            + records.sites.capacity() * std::mem::size_of::<Site>()
            + records.index.capacity() * (std::mem::size_of::<(Vec<Frame>, &str, usize)>() + 8)
            + records.live.capacity() * (std::mem::size_of::<(usize, (usize, usize))>() + 8)
            + records.bit_users.capacity() * (std::mem::size_of::<(u32, u32)>() + 8)
            + 2 * frames
            + names
    }
}

impl Site {
    fn new(stack: Vec<Frame>, object_type: &'static str) -> Site {
        Site { stack, object_type, alloc_objects: 0, alloc_bytes: 0, inuse_objects: 0, inuse_bytes: 0 }
    }

    fn release(&mut self, size: usize) {
        self.inuse_objects = self.inuse_objects.saturating_sub(1);
        self.inuse_bytes = self.inuse_bytes.saturating_sub(size as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> Frame {
        Frame { function: name.into(), file: "t.lua".into(), line: 1 }
    }

    #[test]
    fn off_never_samples_and_rate_one_samples_everything() {
        let sampler = HeapSampler::new();
        assert!(!(0..1000).any(|_| sampler.take(1 << 20)));
        sampler.start(HashMap::new());
        sampler.set_rate(1);
        assert!(sampler.take(1));
    }

    #[test]
    fn the_mean_distance_between_samples_is_the_rate() {
        let sampler = HeapSampler::new();
        sampler.start(HashMap::new());
        sampler.set_rate(4096);
        let (mut samples, bytes) = (0u64, 64u64 << 20);
        for _ in 0..bytes / 64 {
            if sampler.take(64) {
                samples += 1;
                sampler.record(samples as usize * 16, 64, "string", vec![frame("f")]);
            }
        }
        let expected = bytes / 4096;
        assert!(samples.abs_diff(expected) < expected / 20, "{samples} samples, expected {expected}");
    }

    #[test]
    fn frees_of_sampled_blocks_leave_the_in_use_figures() {
        let sampler = HeapSampler::new();
        sampler.start(HashMap::new());
        sampler.set_rate(1);
        sampler.record(0x1000, 100, "table", vec![frame("a")]);
        sampler.record(0x2000, 50, "table", vec![frame("a")]);
        assert_eq!(sampler.forget(0x3000), None);
        assert_eq!(sampler.forget(0x1000), Some("table"));
        assert_eq!(sampler.forget(0x1000), None, "once");
        let profile = sampler.profile();
        let sample = &profile.samples[0];
        assert_eq!((sample.alloc_objects, sample.alloc_bytes), (2, 150));
        assert_eq!((sample.inuse_objects, sample.inuse_bytes), (1, 50));
    }

    #[test]
    fn a_freed_sampled_address_leaves_the_filter_once_no_sampled_block_needs_its_bit() {
        let sampler = HeapSampler::new();
        sampler.start(HashMap::new());
        sampler.set_rate(1);
        let block = 0x1000;
        // Another address with the same filter bit.
        let twin = (1..).map(|i| block + 16 * i).find(|&b| filter_bit(b) == filter_bit(block)).unwrap();
        sampler.record(block, 32, "table", vec![frame("a")]);
        sampler.record(twin, 32, "table", vec![frame("a")]);
        assert_eq!(sampler.forget(block), Some("table"));
        assert!(sampler.may_be_sampled(block), "the twin still needs the bit");
        assert_eq!(sampler.forget(twin), Some("table"));
        // The allocator hands freed addresses out again at once: a stale bit would send every
        // later free of them down the slow path.
        assert!(!sampler.may_be_sampled(block) && !sampler.may_be_sampled(twin));
        sampler.record(block, 32, "table", vec![frame("a")]);
        sampler.record(block, 48, "string", vec![frame("b")]); // reused without a free seen
        assert_eq!(sampler.forget(block), Some("string"));
        assert!(!sampler.may_be_sampled(block));
    }

    #[test]
    fn the_stacks_memory_is_bounded_whatever_their_names() {
        let sampler = HeapSampler::new();
        sampler.start(HashMap::new());
        sampler.set_rate(1);
        let long = "f".repeat(256);
        for i in 0..3000 {
            let stack = (0..MAX_DEPTH)
                .map(|depth| Frame { function: format!("{long}{i}"), file: "t.lua".into(), line: depth as i64 })
                .collect();
            sampler.record(16 * (i + 1), 8, "table", stack);
        }
        let profile = sampler.profile();
        let other =
            profile.samples.iter().find(|s| s.stack[0].function == "(other stacks)").expect("an (other stacks) site");
        assert!(other.alloc_objects > 1000, "{}", other.alloc_objects);
        let kept: usize = profile.samples.iter().flat_map(|s| &s.stack).map(|f| f.function.len()).sum();
        assert!(kept < MAX_STACK_BYTES, "{kept} bytes of names kept");
    }

    #[test]
    fn sites_are_bounded() {
        let sampler = HeapSampler::new();
        sampler.start(HashMap::new());
        sampler.set_rate(1);
        for i in 0..MAX_SITES + 10 {
            sampler.record(16 * (i + 1), 8, "string", vec![frame(&i.to_string())]);
        }
        let profile = sampler.profile();
        assert_eq!(profile.samples.len(), MAX_SITES + 1);
        assert_eq!(profile.samples.last().unwrap().alloc_objects, 10);
    }
}
