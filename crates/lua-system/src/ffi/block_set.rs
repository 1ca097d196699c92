//! A set of block addresses: which blocks of an interposed state the module's counts cover
//! (those allocated, or first resized, since the module was loaded into it).
//!
//! A bitmap over the address space, one bit per 8 bytes (every allocator Lua runs on aligns
//! blocks to at least 8: LuaJIT's own to 8, malloc to 16). The bitmap is kept in leaves of
//! 4 KiB, each covering 256 KiB of addresses, made when a block first lands in their range and
//! dropped when their last block leaves; a leaf is found through a small direct-mapped cache,
//! then a hash map. An allocator hands out neighbouring addresses for neighbouring requests,
//! so consecutive operations touch the same leaves and cache lines: unlike a hash set, which
//! scatters addresses (a cache miss per block on a large heap: interposed states ran twice as
//! slow on binary-trees), the bitmap costs little more than the counters. It takes 1/64 of the
//! tracked heap's address range in memory, outside any Lua heap.
//!
//! Making a leaf can fail for lack of memory; the caller then treats the block as untracked or
//! fails the allocation, so the set never drifts from the heap.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes per bit.
const GRANULE_SHIFT: u32 = 3;
/// Bits per leaf: 32,768 (4 KiB of bitmap), covering 256 KiB of addresses.
const LEAF_BITS_SHIFT: u32 = 15;
const LEAF_WORDS: usize = (1 << LEAF_BITS_SHIFT) / 64;
/// Address bits below a leaf's key.
const LEAF_SHIFT: u32 = GRANULE_SHIFT + LEAF_BITS_SHIFT;
/// Entries of the direct-mapped leaf cache (a power of two).
const CACHE_SLOTS: usize = 16;

struct Leaf {
    words: [u64; LEAF_WORDS],
    /// Addresses in this leaf.
    count: u32,
}

/// Hashes a leaf key (an address shifted right): a multiplication spreads its low bits.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, key: usize) {
        self.0 = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
pub(crate) struct BlockSet {
    len: usize,
    /// Recently used leaves: `(key + 1, leaf)` in slot `key % CACHE_SLOTS` (0: empty).
    cache: [(usize, usize); CACHE_SLOTS],
    leaves: HashMap<usize, Box<Leaf>, BuildHasherDefault<KeyHasher>>,
}

/// The set could not grow.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// Where an address's bit lies: its leaf's key, word and bit.
#[inline(always)]
fn locate(address: usize) -> (usize, usize, u64) {
    let granule = address >> GRANULE_SHIFT;
    let bit = granule & ((1 << LEAF_BITS_SHIFT) - 1);
    (address >> LEAF_SHIFT, bit / 64, 1 << (bit % 64))
}

impl BlockSet {
    /// The leaf of `key`, if it exists.
    #[inline(always)]
    fn leaf(&mut self, key: usize) -> Option<&mut Leaf> {
        let slot = key % CACHE_SLOTS;
        let (cached_key, leaf) = self.cache[slot];
        if cached_key == key.wrapping_add(1) {
            // SAFETY: a cached pointer is that of a leaf boxed in `leaves`; entries are dropped
            // from the cache before their leaf is removed.
            return Some(unsafe { &mut *(leaf as *mut Leaf) });
        }
        self.leaf_slow(key)
    }

    #[inline(never)]
    fn leaf_slow(&mut self, key: usize) -> Option<&mut Leaf> {
        let leaf = self.leaves.get_mut(&key)?;
        self.cache[key % CACHE_SLOTS] = (key.wrapping_add(1), &mut **leaf as *mut Leaf as usize);
        Some(leaf)
    }

    /// Makes the leaf of `key`.
    #[cold]
    #[inline(never)]
    fn make_leaf(&mut self, key: usize) -> Result<&mut Leaf, OutOfMemory> {
        self.leaves.try_reserve(1).map_err(|_| OutOfMemory)?;
        let layout = std::alloc::Layout::new::<Leaf>();
        // SAFETY: `Leaf` has a non-zero size; all-zero bytes are a valid empty leaf.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Leaf;
        if raw.is_null() {
            return Err(OutOfMemory);
        }
        // SAFETY: allocated above with `Leaf`'s layout, as `Box` does.
        let leaf = unsafe { Box::from_raw(raw) };
        self.leaves.insert(key, leaf);
        Ok(self.leaf_slow(key).expect("just inserted"))
    }

    /// Adds `address` (aligned to 8, not already present). Fails only when a new leaf cannot
    /// be made; the set is then unchanged.
    #[inline]
    pub(crate) fn insert(&mut self, address: usize) -> Result<(), OutOfMemory> {
        let (key, word, bit) = locate(address);
        let leaf = match self.leaf(key) {
            Some(leaf) => leaf,
            None => self.make_leaf(key)?,
        };
        debug_assert_eq!(leaf.words[word] & bit, 0, "{address:#x} inserted twice");
        leaf.words[word] |= bit;
        leaf.count += 1;
        self.len += 1;
        Ok(())
    }

    /// Whether `address` is in the set.
    #[cfg_attr(not(feature = "jemalloc"), allow(dead_code))] // the arena's
    #[inline]
    pub(crate) fn contains(&mut self, address: usize) -> bool {
        if self.len == 0 {
            return false;
        }
        let (key, word, bit) = locate(address);
        self.leaf(key).is_some_and(|leaf| leaf.words[word] & bit != 0)
    }

    /// Removes `address`; false if it was not in the set.
    #[inline]
    pub(crate) fn remove(&mut self, address: usize) -> bool {
        if self.len == 0 {
            return false;
        }
        let (key, word, bit) = locate(address);
        let Some(leaf) = self.leaf(key) else { return false };
        if leaf.words[word] & bit == 0 {
            return false;
        }
        leaf.words[word] &= !bit;
        leaf.count -= 1;
        let empty = leaf.count == 0;
        self.len -= 1;
        if empty {
            self.drop_leaf(key);
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn drop_leaf(&mut self, key: usize) {
        let slot = key % CACHE_SLOTS;
        if self.cache[slot].0 == key.wrapping_add(1) {
            self.cache[slot] = (0, 0);
        }
        self.leaves.remove(&key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The memory the set itself takes (outside any Lua heap), leaves only.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.leaves.len() * std::mem::size_of::<Leaf>()
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
        for _ in 0..400_000 {
            // Addresses in a few distant ranges, so that leaves are made, cached, evicted from
            // the cache and dropped; some near the top of the address space.
            let base =
                [0x1000usize, 0x7fff_f000_0000, 0x5555_0000_0000, (usize::MAX - (1 << 26)) & !7][(next() % 4) as usize];
            let address = base + (next() % 100_000) as usize * 8 * 37;
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
        assert_eq!(ours.bytes(), 0, "every leaf dropped once empty");
        assert!(!ours.remove(0x1000));
    }

    #[test]
    fn neighbours_share_a_leaf() {
        let mut set = BlockSet::default();
        // 16,384 blocks of 16 bytes: 256 KiB of addresses, one leaf of 4 KiB.
        for i in 0..16_384usize {
            set.insert(0x10_0000 + i * 16).unwrap();
        }
        assert_eq!(set.bytes(), std::mem::size_of::<Leaf>());
        assert!(set.bytes() < 4200, "{}", set.bytes());
    }
}
