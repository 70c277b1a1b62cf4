//! A small, stable, non-cryptographic digest (64-bit FNV-1a) for change detection: the
//! checksums of journal lines and the fingerprint of an input's files. Stable across
//! versions and platforms, unlike `std`'s hashers; not a defence against a forger.

/// A running 64-bit FNV-1a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Adds `bytes`.
    #[must_use]
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Adds a number (little-endian bytes).
    #[must_use]
    pub fn number(self, n: u64) -> Self {
        self.bytes(&n.to_le_bytes())
    }

    /// The digest.
    #[must_use]
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The digest of `bytes`.
#[must_use]
pub fn fnv64(bytes: &[u8]) -> u64 {
    Fnv64::default().bytes(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_test_vectors() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
