//! The streaming, prefix-mixed MurmurHash3 equals the reference `murmur3` crate on the joined string.

use proptest::prelude::*;
use sluice_flags::bucket::{HashPrefix, ROLLOUT_SEED, VARIANT_SEED};

fn reference(s: &str, seed: u32) -> u32 {
    murmur3::murmur3_32(&mut std::io::Cursor::new(s.as_bytes()), seed).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn equals_the_reference(prefix in "\\PC{0,17}", value in "\\PC{0,33}", seed in prop_oneof![Just(ROLLOUT_SEED), Just(VARIANT_SEED), any::<u32>()]) {
        let joined = format!("{prefix}{value}");
        prop_assert_eq!(HashPrefix::new(&prefix, seed).hash(&value), reference(&joined, seed));
    }
}

#[test]
fn known_unleash_buckets() {
    // From Unleash's own tests: normalizedValue("123", "gr1") = 73, ("999", "groupX") = 25.
    assert_eq!(sluice_flags::bucket::rollout_bucket("gr1", "123"), 73);
    assert_eq!(sluice_flags::bucket::rollout_bucket("groupX", "999"), 25);
}
