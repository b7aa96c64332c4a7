//! Bucketing: MurmurHash3 x86_32 over `"{groupId}:{stickiness value}"`, as every Unleash SDK does.
//!
//! The group id is known when a snapshot is compiled, so its full 4-byte blocks are mixed once then
//! ([`HashPrefix`]); an evaluation hashes only the stickiness value and never allocates the joined string.

/// Seed of the gradual-rollout hash.
pub const ROLLOUT_SEED: u32 = 0;
/// Seed of the variant hash.
pub const VARIANT_SEED: u32 = 86_028_157;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix_k(mut k: u32) -> u32 {
    k = k.wrapping_mul(C1);
    k = k.rotate_left(15);
    k.wrapping_mul(C2)
}

#[inline(always)]
fn mix_h(h: u32, k: u32) -> u32 {
    let h = (h ^ mix_k(k)).rotate_left(13);
    h.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// MurmurHash3 x86_32 state after a fixed prefix (`"{groupId}:"`): the full blocks mixed, the tail kept.
///
/// ```
/// use sluice_flags::bucket::{HashPrefix, ROLLOUT_SEED};
/// let prefix = HashPrefix::new("checkout:", ROLLOUT_SEED);
/// // Same as hashing the joined string in one go.
/// assert_eq!(prefix.hash("user-1"), HashPrefix::new("", ROLLOUT_SEED).hash("checkout:user-1"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPrefix {
    h: u32,
    tail: [u8; 4],
    tail_len: u8,
    len: u32,
}

impl HashPrefix {
    /// Mixes `prefix` under `seed`.
    pub fn new(prefix: &str, seed: u32) -> Self {
        let bytes = prefix.as_bytes();
        let mut h = seed;
        let mut chunks = bytes.chunks_exact(4);
        for c in &mut chunks {
            h = mix_h(h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        let mut tail = [0u8; 4];
        tail[..rest.len()].copy_from_slice(rest);
        HashPrefix { h, tail, tail_len: rest.len() as u8, len: bytes.len() as u32 }
    }

    /// The hash of the prefix followed by `value`.
    #[inline]
    pub fn hash(&self, value: &str) -> u32 {
        let mut data = value.as_bytes();
        let mut h = self.h;
        let mut tail = self.tail;
        let mut t = self.tail_len as usize;
        if t > 0 {
            // Complete the prefix's partial block with the first bytes of the value.
            let take = (4 - t).min(data.len());
            tail[t..t + take].copy_from_slice(&data[..take]);
            t += take;
            data = &data[take..];
            if t == 4 {
                h = mix_h(h, u32::from_le_bytes(tail));
                t = 0;
            }
        }
        if t == 0 {
            let mut chunks = data.chunks_exact(4);
            for c in &mut chunks {
                h = mix_h(h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
            let rest = chunks.remainder();
            tail = [0; 4];
            tail[..rest.len()].copy_from_slice(rest);
            t = rest.len();
        }
        if t > 0 {
            let mut k = 0u32;
            for i in (0..t).rev() {
                k = (k << 8) | tail[i] as u32;
            }
            h ^= mix_k(k);
        }
        h ^= self.len.wrapping_add(value.len() as u32);
        fmix(h)
    }

    /// Unleash's normalized bucket in `1..=modulus`: `hash % modulus + 1`.
    #[inline]
    pub fn bucket(&self, value: &str, modulus: u32) -> u32 {
        self.hash(value) % modulus + 1
    }
}

/// Unleash's gradual-rollout bucket of `value` in `group_id`, in `1..=100`: a context is in a rollout of
/// `p` percent when its bucket is `<= p`.
///
/// ```
/// // The bucket is stable: the same user in the same group always lands in the same place.
/// let b = sluice_flags::bucket::rollout_bucket("checkout", "user-1");
/// assert!((1..=100).contains(&b));
/// assert_eq!(b, sluice_flags::bucket::rollout_bucket("checkout", "user-1"));
/// ```
pub fn rollout_bucket(group_id: &str, value: &str) -> u32 {
    HashPrefix::new(&format!("{group_id}:"), ROLLOUT_SEED).bucket(value, 100)
}
