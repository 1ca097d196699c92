//! A set of block addresses: which blocks of an interposed state the module's counts cover
//! (those allocated, or first resized, since the module was loaded into it).
//!
//! Open addressing with linear probing over a power-of-two table kept at most half full, and
//! deletion by backward shift (no tombstones), so a lookup touches one or two cache lines. Keys
//! are block addresses: never zero, and aligned, so their low bits are dropped before hashing.
//! Growing the table can fail for lack of memory; the caller then fails the allocation it was
//! recording, so the set never drifts from the heap.

/// An empty slot.
const EMPTY: usize = 0;

#[derive(Default)]
pub(crate) struct BlockSet {
    slots: Vec<usize>,
    len: usize,
}

/// The set could not grow.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

impl BlockSet {
    #[inline(always)]
    fn index(&self, address: usize) -> usize {
        // Fibonacci hashing of the address without its alignment bits.
        let hash = ((address >> 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (hash >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// Makes room for one more address: after it succeeds, the next [`insert`](Self::insert)
    /// cannot fail.
    pub(crate) fn reserve(&mut self) -> Result<(), OutOfMemory> {
        if (self.len + 1) * 2 > self.slots.len() { self.grow() } else { Ok(()) }
    }

    /// Adds `address` (not zero, not already present).
    pub(crate) fn insert(&mut self, address: usize) -> Result<(), OutOfMemory> {
        debug_assert_ne!(address, EMPTY);
        self.reserve()?;
        self.place(address);
        self.len += 1;
        Ok(())
    }

    fn place(&mut self, address: usize) {
        let mask = self.slots.len() - 1;
        let mut i = self.index(address);
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = address;
    }

    fn grow(&mut self) -> Result<(), OutOfMemory> {
        let capacity = (self.slots.len() * 2).max(64);
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity).map_err(|_| OutOfMemory)?;
        slots.resize(capacity, EMPTY);
        let old = std::mem::replace(&mut self.slots, slots);
        for address in old.into_iter().filter(|&a| a != EMPTY) {
            self.place(address);
        }
        Ok(())
    }

    /// Removes `address`; false if it was not in the set.
    #[inline]
    pub(crate) fn remove(&mut self, address: usize) -> bool {
        if self.len == 0 {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.index(address);
        loop {
            match self.slots[i] {
                EMPTY => return false,
                a if a == address => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward shift: move later entries of the probe run into the hole when their home
        // slot allows it, so lookups never need tombstones.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.slots[j] != EMPTY {
            let home = self.index(self.slots[j]);
            let distance_to_j = j.wrapping_sub(home) & mask;
            let distance_to_hole = hole.wrapping_sub(home) & mask;
            if distance_to_hole <= distance_to_j {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The memory the set itself takes (outside any Lua heap).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn behaves_as_a_set_under_random_inserts_and_removes() {
        let mut ours = BlockSet::default();
        let mut reference = HashSet::new();
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200_000 {
            // Addresses from a small range, so removals hit and probe runs collide.
            let address = 0x1000 + (next() % 4096) as usize * 16;
            if next() % 3 == 0 || reference.contains(&address) {
                assert_eq!(ours.remove(address), reference.remove(&address), "remove {address:#x}");
            } else {
                ours.insert(address).unwrap();
                reference.insert(address);
            }
            assert_eq!(ours.len(), reference.len());
        }
        for &address in &reference {
            assert!(ours.remove(address), "{address:#x} was lost");
        }
        assert_eq!(ours.len(), 0);
    }

    #[test]
    fn stays_at_most_half_full() {
        let mut set = BlockSet::default();
        for i in 1..=1000 {
            set.insert(i * 16).unwrap();
        }
        assert!(set.bytes() / std::mem::size_of::<usize>() >= 2000);
    }
}
