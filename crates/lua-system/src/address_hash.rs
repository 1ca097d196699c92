//! Hashing block addresses: the sets and maps keyed by a heap block's address (the thread
//! blocks of `ffi/coroutines.rs`, the heap profiler's sampled blocks) are touched on allocation
//! paths, where std's SipHash (DoS-resistant, for keys an attacker chooses) costs ten times
//! more than needed. Addresses come from the allocator, not from scripts: one multiplication
//! folded onto itself spreads them (16-byte aligned, so their low bits carry nothing) over
//! every bucket.
//!
//! [`AddressTable`], the set of thread blocks, is written here rather than taken from
//! `hashbrown`: a thread block is added and removed on every coroutine's life, inside the
//! allocator, and hashbrown's group probing and control bytes cost four times what a table of
//! bare addresses with linear probing does (BENCHMARKS.md, "What the allocation paths cost").

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by block addresses.
pub(crate) type AddressMap<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

/// The multiplication folded onto itself (see the module docs).
#[inline(always)]
fn fold(address: u64) -> u64 {
    let product = address.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    product ^ (product >> 32)
}

/// Hashes one address (see the module docs); other keys are hashed byte by byte, FNV-style, for
/// completeness.
#[derive(Default)]
pub(crate) struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.0 = fold(address as u64 ^ self.0);
    }
}

/// The fewest slots a table that holds anything has.
const MIN_SLOTS: usize = 16;

/// A set of non-zero block addresses: open addressing with linear probing, at most half full,
/// and deletion by backward shift (no tombstones, so a long life of inserts and removals never
/// slows lookups). [`AddressTable::shrink`] brings it back to at most eight times the addresses
/// held.
#[derive(Default)]
pub(crate) struct AddressTable {
    /// A power of two of slots, or none; 0 marks an empty slot (no block lies at address 0).
    slots: Vec<usize>,
    len: usize,
}

impl AddressTable {
    #[inline(always)]
    fn home(&self, address: usize) -> usize {
        fold(address as u64) as usize & (self.slots.len() - 1)
    }

    /// Adds `address` (non-zero). False if the table could not grow (out of memory): then
    /// nothing changed. Inlined into the allocator's (out-of-line) thread-block paths, as
    /// [`AddressTable::remove`] is: a call of its own costs more than the probe.
    #[inline]
    pub(crate) fn insert(&mut self, address: usize) -> bool {
        debug_assert_ne!(address, 0);
        if (self.len + 1) * 2 > self.slots.len() && !self.resize((self.slots.len() * 2).max(MIN_SLOTS)) {
            return false;
        }
        let (slot, held) = self.find(address);
        if !held {
            self.slots[slot] = address;
            self.len += 1;
        }
        true
    }

    /// Where `address` is (true), or the empty slot where its probe ends (false). The table
    /// has slots.
    #[inline(always)]
    fn find(&self, address: usize) -> (usize, bool) {
        let mask = self.slots.len() - 1;
        let mut slot = self.home(address);
        loop {
            match self.slots[slot] {
                0 => return (slot, false),
                held if held == address => return (slot, true),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Removes `address`; whether it was there.
    #[inline(always)]
    pub(crate) fn remove(&mut self, address: usize) -> bool {
        if self.len == 0 {
            return false;
        }
        let (mut hole, held) = self.find(address);
        if !held {
            return false;
        }
        let mask = self.slots.len() - 1;
        // Backward shift: each later address of the run moves into the hole if the hole lies
        // on its probe path (between its home slot and where it is), so every address stays
        // reachable from its home without a gap.
        let mut slot = hole;
        loop {
            slot = (slot + 1) & mask;
            let held = self.slots[slot];
            if held == 0 {
                break;
            }
            if slot.wrapping_sub(self.home(held)) & mask >= slot.wrapping_sub(hole) & mask {
                self.slots[hole] = held;
                hole = slot;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    /// Halves the table while it is less than an eighth full. Removals never shrink it (a heap
    /// whose coroutines come and go would grow and shrink it over and over, inside the
    /// allocator); whoever iterates calls this first, so iterating costs O(addresses held).
    /// A failed shrink leaves the table as it is: still correct.
    pub(crate) fn shrink(&mut self) {
        while self.slots.len() > MIN_SLOTS && self.len * 8 < self.slots.len() {
            if !self.resize(self.slots.len() / 2) {
                return;
            }
        }
    }

    /// Moves every address into `slots` new slots (a power of two, more than twice the
    /// addresses held). False if they could not be allocated.
    fn resize(&mut self, slots: usize) -> bool {
        let mut fresh = Vec::new();
        if fresh.try_reserve_exact(slots).is_err() {
            return false;
        }
        fresh.resize(slots, 0);
        let old = std::mem::replace(&mut self.slots, fresh);
        let mask = slots - 1;
        for address in old.into_iter().filter(|&a| a != 0) {
            let mut slot = self.home(address);
            while self.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = address;
        }
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, address: usize) -> bool {
        self.len != 0 && self.find(address).1
    }

    /// The addresses held, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots.iter().copied().filter(|&a| a != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn aligned_addresses_spread_over_the_low_bits() {
        let hasher = BuildHasherDefault::<AddressHasher>::default();
        let mut buckets = [0u32; 64];
        for i in 0..64 * 100 {
            buckets[(hasher.hash_one(0x7f00_0000_0000usize + 16 * i) & 63) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| (50..=150).contains(&n)), "{buckets:?}");
    }

    #[test]
    fn the_table_agrees_with_a_hash_set_through_growth_removal_and_shrinking() {
        use std::collections::HashSet;
        let mut table = AddressTable::default();
        let mut model = HashSet::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..200_000 {
            // Neighbouring, 16-byte aligned addresses as an allocator hands them out, from a
            // range small enough that inserts meet held addresses and removals meet absent ones.
            let address = 0x7f00_0000_0000 + 16 * rng.usize(0..4096);
            let grow = round % 40_000 < 25_000;
            if rng.bool() == grow {
                assert!(table.insert(address));
                model.insert(address);
            } else {
                assert_eq!(table.remove(address), model.remove(&address), "remove {address:#x}");
            }
            assert_eq!(table.len(), model.len());
            if round % 997 == 0 {
                table.shrink();
                let mut held: Vec<usize> = table.iter().collect();
                held.sort_unstable();
                let mut expected: Vec<usize> = model.iter().copied().collect();
                expected.sort_unstable();
                assert_eq!(held, expected);
                assert!(model.iter().all(|&a| table.contains(a)));
                assert!(table.slots.len() <= MIN_SLOTS.max(8 * model.len()), "shrinks as it empties");
            }
        }
        for address in model.drain() {
            assert!(table.remove(address));
        }
        table.shrink();
        assert_eq!((table.len(), table.iter().count(), table.slots.len()), (0, 0, MIN_SLOTS));
        assert!(!table.contains(0x7f00_0000_0000) && !table.remove(0x7f00_0000_0000));
    }
}
