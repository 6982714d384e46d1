//! Which partition a keyed record goes to: exactly as Kafka's Java producer decides.
//!
//! Kafka's default for a record with a key is `murmur2(key) & 0x7fffffff`
//! modulo the partition count (the Java client's `Utils.murmur2`,
//! `Utils.toPositive` and `BuiltInPartitioner.partitionForKey`). Using the same
//! function means that a device's readings land on the same partition whichever
//! Kafka client sent them, so per-device order holds across clients.

/// Kafka's 32-bit murmur2 hash of `data`, with Kafka's seed.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition, out of `partitions`, that Kafka's Java producer picks for `key`.
///
/// # Panics
/// When `partitions` is not positive.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with Kafka 4.1.1's `org.apache.kafka.common.utils.Utils.murmur2` (kafka-clients jar).
    const MURMUR2_VECTORS: &[(&str, i32)] = &[
        ("", 275646681),
        ("a", -1563381124),
        ("ab", 316155434),
        ("abc", 479470107),
        ("abcd", -1323649548),
        ("device-00001", -639784259),
        ("temperature-0042", 137618648),
        ("21", -973932308),
        ("kafka", -798503068),
        ("humidity-000007", 592238024),
        ("motion-099999", -755749872),
    ];

    /// `BuiltInPartitioner.partitionForKey(key, 6)` from the same jar.
    const PARTITION_OF_6_VECTORS: &[(&str, i32)] = &[
        ("", 3),
        ("a", 4),
        ("ab", 2),
        ("abc", 3),
        ("abcd", 2),
        ("device-00001", 3),
        ("temperature-0042", 2),
        ("21", 0),
        ("kafka", 4),
        ("humidity-000007", 2),
        ("motion-099999", 2),
    ];

    #[test]
    fn murmur2_matches_kafkas_java_implementation() {
        for (key, expected) in MURMUR2_VECTORS {
            assert_eq!(murmur2(key.as_bytes()), *expected, "key {key:?}");
        }
    }

    #[test]
    fn partition_for_key_matches_kafkas_built_in_partitioner() {
        for (key, expected) in PARTITION_OF_6_VECTORS {
            assert_eq!(
                partition_for_key(key.as_bytes(), 6),
                *expected,
                "key {key:?}"
            );
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_partition_count() {
        for (key, hash) in MURMUR2_VECTORS {
            for partitions in [1, 3, 6, 7] {
                let expected = (hash & 0x7fff_ffff) % partitions;
                assert_eq!(partition_for_key(key.as_bytes(), partitions), expected);
            }
        }
    }
}
