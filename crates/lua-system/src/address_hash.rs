//! Hashing block addresses: the sets and maps keyed by a heap block's address (the thread
//! blocks of `heap.rs`, the heap profiler's sampled blocks) are touched on allocation paths,
//! where std's SipHash (DoS-resistant, for keys an attacker chooses) cost 170 instructions a
//! lookup. Addresses come from the allocator, not from scripts: one multiplication folded onto
//! itself spreads them (16-byte aligned, so their low bits carry nothing) over every bucket.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A set of block addresses.
pub(crate) type AddressSet = HashSet<usize, BuildHasherDefault<AddressHasher>>;

/// A map keyed by block addresses.
pub(crate) type AddressMap<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

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
        let product = (address as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = product ^ (product >> 32);
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
}
