//! Bloom filter over the trace IDs of one block, stored next to the data file. A
//! trace-by-ID lookup reads this small object first and skips the Parquet file entirely
//! for the (usual) blocks that cannot hold the trace.
//!
//! Probe positions come from double hashing (`h1 + i * h2`). Trace IDs are meant to be
//! random, but some clients (64-bit Jaeger/Zipkin IDs) leave the high half zero, so the two
//! halves go through a splitmix64 finalizer first instead of being used raw.
//!
//! Encoding (all integers little endian):
//! ```text
//! magic "SPBF" | version u8 = 1 | num_hashes u8 | num_bits u64 | words [u64; ceil(num_bits/64)] | crc32 u32
//! ```
//! The CRC covers everything before it: a flipped bit in the filter would otherwise turn
//! into a silent false negative, i.e. a trace that exists but is never found.

use bytes::{BufMut, Bytes, BytesMut};

use crate::otlp::TraceId;

const MAGIC: &[u8; 4] = b"SPBF";
const VERSION_1: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 8;
const CRC_LEN: usize = 4;
/// Beyond this the filter costs more reads than it saves; also bounds decode work.
const MAX_HASHES: u8 = 30;
/// A block with more trace IDs than this would be cut long before; rejecting larger
/// headers keeps a damaged file from making us allocate gigabytes.
const MAX_BITS: u64 = 1 << 36;

/// The false-positive rate blocks are written with.
pub const DEFAULT_FALSE_POSITIVE_RATE: f64 = 0.01;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BloomError {
    #[error("bloom filter is truncated: {len} bytes")]
    Truncated { len: usize },
    #[error("bloom filter has a bad magic number")]
    BadMagic,
    #[error("bloom filter version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("bloom filter has invalid parameters: {num_bits} bits, {num_hashes} hashes")]
    BadParameters { num_bits: u64, num_hashes: u8 },
    #[error("bloom filter length {actual} does not match its header (want {expected})")]
    LengthMismatch { expected: usize, actual: usize },
    #[error("bloom filter checksum mismatch")]
    Checksum,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIdBloom {
    num_bits: u64,
    num_hashes: u8,
    words: Vec<u64>,
}

impl TraceIdBloom {
    /// An empty filter sized so that `expected_items` IDs give about
    /// `false_positive_rate` false positives.
    pub fn with_capacity(expected_items: usize, false_positive_rate: f64) -> TraceIdBloom {
        let num_items = expected_items.max(1) as f64;
        let rate = false_positive_rate.clamp(1e-9, 0.5);
        let ln2 = std::f64::consts::LN_2;
        // Standard optimum: m = -n ln p / (ln 2)^2, k = (m / n) ln 2.
        let ideal_bits = (-num_items * rate.ln() / (ln2 * ln2)).ceil();
        let num_bits = (ideal_bits as u64).clamp(64, MAX_BITS);
        let ideal_hashes = ((num_bits as f64 / num_items) * ln2).round();
        let num_hashes = (ideal_hashes as u8).clamp(1, MAX_HASHES);
        TraceIdBloom {
            num_bits,
            num_hashes,
            words: vec![0; num_words(num_bits)],
        }
    }

    pub fn insert(&mut self, trace_id: &TraceId) {
        for bit in self.probes(trace_id) {
            // Cannot go out of bounds: probes are < num_bits <= words.len() * 64.
            if let Some(word) = self.words.get_mut((bit / 64) as usize) {
                *word |= 1 << (bit % 64);
            }
        }
    }

    /// False means the ID is certainly absent; true means it may be present.
    pub fn may_contain(&self, trace_id: &TraceId) -> bool {
        self.probes(trace_id).all(|bit| {
            self.words
                .get((bit / 64) as usize)
                .is_some_and(|word| word & (1 << (bit % 64)) != 0)
        })
    }

    fn probes(&self, trace_id: &TraceId) -> impl Iterator<Item = u64> {
        let (h1, h2) = hash_pair(trace_id);
        let num_bits = self.num_bits;
        (0..u64::from(self.num_hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % num_bits)
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.words.len() * 8 + CRC_LEN);
        out.put_slice(MAGIC);
        out.put_u8(VERSION_1);
        out.put_u8(self.num_hashes);
        out.put_u64_le(self.num_bits);
        for word in &self.words {
            out.put_u64_le(*word);
        }
        let crc = crc32fast::hash(&out);
        out.put_u32_le(crc);
        out.freeze()
    }

    /// Parses an encoded filter. Every malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<TraceIdBloom, BloomError> {
        let truncated = || BloomError::Truncated { len: bytes.len() };
        if bytes.len() < HEADER_LEN + CRC_LEN {
            return Err(truncated());
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        if &header[..4] != MAGIC {
            return Err(BloomError::BadMagic);
        }
        let version = header[4];
        if version != VERSION_1 {
            return Err(BloomError::UnsupportedVersion(version));
        }
        let num_hashes = header[5];
        let mut num_bits_le = [0u8; 8];
        num_bits_le.copy_from_slice(&header[6..14]);
        let num_bits = u64::from_le_bytes(num_bits_le);
        if num_bits == 0 || num_bits > MAX_BITS || num_hashes == 0 || num_hashes > MAX_HASHES {
            return Err(BloomError::BadParameters {
                num_bits,
                num_hashes,
            });
        }
        let expected = HEADER_LEN + num_words(num_bits) * 8 + CRC_LEN;
        if bytes.len() != expected {
            return Err(BloomError::LengthMismatch {
                expected,
                actual: bytes.len(),
            });
        }
        let (body, crc_bytes) = rest.split_at(rest.len() - CRC_LEN);
        let mut crc_le = [0u8; 4];
        crc_le.copy_from_slice(crc_bytes);
        if crc32fast::hash(&bytes[..bytes.len() - CRC_LEN]) != u32::from_le_bytes(crc_le) {
            return Err(BloomError::Checksum);
        }
        let words = body
            .chunks_exact(8)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                u64::from_le_bytes(word)
            })
            .collect();
        Ok(TraceIdBloom {
            num_bits,
            num_hashes,
            words,
        })
    }
}

fn num_words(num_bits: u64) -> usize {
    num_bits.div_ceil(64) as usize
}

/// splitmix64's finalizer: a cheap bijective mixer with good avalanche.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash_pair(trace_id: &TraceId) -> (u64, u64) {
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&trace_id.0[..8]);
    low.copy_from_slice(&trace_id.0[8..]);
    let high = u64::from_le_bytes(high);
    let low = u64::from_le_bytes(low);
    let h1 = mix64(low ^ mix64(high));
    // Odd so that successive probes never collapse onto one position.
    let h2 = mix64(high ^ mix64(low ^ 0x9e37_79b9_7f4a_7c15)) | 1;
    (h1, h2)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_ids(seed: u64, count: usize) -> Vec<TraceId> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..count).map(|_| TraceId(rng.random())).collect()
    }

    fn false_positive_rate(bloom: &TraceIdBloom, probes: &[TraceId]) -> f64 {
        let hits = probes.iter().filter(|id| bloom.may_contain(id)).count();
        hits as f64 / probes.len() as f64
    }

    #[test]
    fn no_false_negatives_and_rate_near_target() {
        let ids = random_ids(1, 100_000);
        let mut bloom = TraceIdBloom::with_capacity(ids.len(), DEFAULT_FALSE_POSITIVE_RATE);
        for id in &ids {
            bloom.insert(id);
        }
        assert!(ids.iter().all(|id| bloom.may_contain(id)));
        let rate = false_positive_rate(&bloom, &random_ids(2, 100_000));
        assert!((0.005..0.015).contains(&rate), "false positive rate {rate}");
    }

    #[test]
    fn sixty_four_bit_ids_still_spread() {
        // Jaeger-style IDs: the high 8 bytes are zero.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut short_id = || {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&rng.random::<[u8; 8]>());
            TraceId(id)
        };
        let ids: Vec<TraceId> = (0..20_000).map(|_| short_id()).collect();
        let probes: Vec<TraceId> = (0..20_000).map(|_| short_id()).collect();
        let mut bloom = TraceIdBloom::with_capacity(ids.len(), DEFAULT_FALSE_POSITIVE_RATE);
        ids.iter().for_each(|id| bloom.insert(id));
        assert!(ids.iter().all(|id| bloom.may_contain(id)));
        let rate = false_positive_rate(&bloom, &probes);
        assert!(rate < 0.02, "false positive rate {rate}");
    }

    #[test]
    fn size_is_about_ten_bits_per_id() {
        let bloom = TraceIdBloom::with_capacity(10_000, DEFAULT_FALSE_POSITIVE_RATE);
        let bits_per_id = bloom.encode().len() as f64 * 8.0 / 10_000.0;
        assert!((9.0..10.5).contains(&bits_per_id), "{bits_per_id}");
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut bloom = TraceIdBloom::with_capacity(100, DEFAULT_FALSE_POSITIVE_RATE);
        random_ids(4, 100).iter().for_each(|id| bloom.insert(id));
        assert_eq!(TraceIdBloom::decode(&bloom.encode()).unwrap(), bloom);
        let empty = TraceIdBloom::with_capacity(0, DEFAULT_FALSE_POSITIVE_RATE);
        assert_eq!(TraceIdBloom::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut bloom = TraceIdBloom::with_capacity(100, DEFAULT_FALSE_POSITIVE_RATE);
        random_ids(5, 100).iter().for_each(|id| bloom.insert(id));
        let encoded = bloom.encode().to_vec();

        for len in 0..encoded.len() {
            assert!(
                TraceIdBloom::decode(&encoded[..len]).is_err(),
                "prefix of {len}"
            );
        }
        let mut bad_magic = encoded.clone();
        bad_magic[0] = b'X';
        assert_eq!(TraceIdBloom::decode(&bad_magic), Err(BloomError::BadMagic));
        let mut bad_version = encoded.clone();
        bad_version[4] = 9;
        assert_eq!(
            TraceIdBloom::decode(&bad_version),
            Err(BloomError::UnsupportedVersion(9))
        );
        let mut huge = encoded.clone();
        huge[6..14].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            TraceIdBloom::decode(&huge),
            Err(BloomError::BadParameters { .. })
        ));
        let mut flipped = encoded.clone();
        flipped[HEADER_LEN + 3] ^= 0x10;
        assert_eq!(TraceIdBloom::decode(&flipped), Err(BloomError::Checksum));
        let mut longer = encoded;
        longer.push(0);
        assert!(matches!(
            TraceIdBloom::decode(&longer),
            Err(BloomError::LengthMismatch { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = TraceIdBloom::decode(&bytes);
        }
    }
}
