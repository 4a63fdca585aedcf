//! Cutting a run into shards for CI, with nextest's conventions: each of N
//! jobs runs `--partition count:K/N` or `--partition hash:K/N` (K from 1),
//! and the shards are disjoint and together the whole run.
//!
//! - `count:K/N` deals the selection out round-robin: item `i` (0-based, in
//!   the selection's order) belongs to shard `i % N + 1`. Shards are even,
//!   but adding a fixture moves the ones after it to other shards.
//! - `hash:K/N` puts an item in shard `h % N + 1`, where `h` is the 64-bit
//!   FNV-1a hash of its name: an item stays in its shard whatever else is
//!   added or removed, and shards are only about even.
//!
//! The hash is FNV-1a (the `fnv` crate) over the name's UTF-8 bytes, never
//! Rust's randomised default hasher, so every machine cuts the same way.
//!
//! ```
//! use harness::partition::Partition;
//! let p: Partition = "count:2/3".parse().unwrap();
//! let names = ["a", "b", "c", "d", "e"];
//! let mine: Vec<&str> = names
//!     .iter()
//!     .enumerate()
//!     .filter(|(i, name)| p.contains(*i as u64, name.as_bytes()))
//!     .map(|(_, name)| *name)
//!     .collect();
//! assert_eq!(mine, ["b", "e"]);
//! assert!("count:0/4".parse::<Partition>().is_err());
//! ```

use std::fmt;
use std::hash::Hasher as _;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which part of a run this job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    pub kind: PartitionKind,
    /// This shard, from 1.
    pub shard: u64,
    /// How many shards the run is cut into.
    pub total: u64,
}

/// How items are dealt to shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionKind {
    /// Round-robin over the selection's order.
    Count,
    /// By a stable hash of the item's name.
    Hash,
}

impl PartitionKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Hash => "hash",
        }
    }
}

impl Partition {
    /// Whether the item at `index` of the selection, named `name`, is in
    /// this shard.
    pub fn contains(&self, index: u64, name: &[u8]) -> bool {
        let bucket = match self.kind {
            PartitionKind::Count => index % self.total,
            PartitionKind::Hash => hash(name) % self.total,
        };
        bucket + 1 == self.shard
    }

    /// The same cut, for shard `shard`.
    pub fn with_shard(self, shard: u64) -> Self {
        Self { shard, ..self }
    }

    /// The other shards of the same cut, this one included: 1..=N.
    pub fn all(self) -> impl Iterator<Item = Self> {
        (1..=self.total).map(move |shard| self.with_shard(shard))
    }
}

/// The stable 64-bit hash that `hash:K/N` deals by (FNV-1a).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    // `write`, not `Hash::hash`: the latter adds a terminator whose form
    // the standard library does not promise to keep.
    hasher.write(bytes);
    hasher.finish()
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.kind.name(), self.shard, self.total)
    }
}

/// Why a `--partition` value was refused (clap names the flag around it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected `count:K/N` or `hash:K/N` (e.g. count:1/4), not `{0}`")]
    Form(String),
    #[error("unknown partition kind `{0}`: expected `count` or `hash`")]
    PartitionKind(String),
    #[error("`{0}` is not a whole number")]
    Number(String),
    #[error("the number of shards must be at least 1, not {0}")]
    Total(u64),
    #[error("shard {shard} does not exist: shards are numbered 1 to {total}")]
    Shard { shard: u64, total: u64 },
}

impl FromStr for Partition {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| ParseError::Form(s.into()))?;
        let kind = match kind {
            "count" => PartitionKind::Count,
            "hash" => PartitionKind::Hash,
            other => return Err(ParseError::PartitionKind(other.into())),
        };
        let (shard, total) = rest
            .split_once('/')
            .ok_or_else(|| ParseError::Form(s.into()))?;
        let number = |n: &str| {
            n.parse::<u64>()
                .map_err(|_| ParseError::Number(n.to_string()))
        };
        let (shard, total) = (number(shard)?, number(total)?);
        if total == 0 {
            return Err(ParseError::Total(total));
        }
        if shard == 0 || shard > total {
            return Err(ParseError::Shard { shard, total });
        }
        Ok(Self { kind, shard, total })
    }
}

/// In reports, as it is written on the command line: `"count:1/4"`.
impl Serialize for Partition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Partition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a run selected before it was cut: every shard of one run records
/// the same, so a merge can tell shards of different runs apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// How many items were selected.
    pub size: u64,
    /// FNV-1a of the selected names in order, one per line, as 16 hex
    /// digits: equal for equal selections.
    pub digest: String,
}

impl Selection {
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut hasher = fnv::FnvHasher::default();
        let mut size = 0;
        for name in names {
            hasher.write(name.as_bytes());
            hasher.write(b"\n");
            size += 1;
        }
        Self {
            size,
            digest: format!("{:016x}", hasher.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("fixture_{i:03}")).collect()
    }

    /// Every item in exactly one shard, for both kinds and many N.
    #[test]
    fn shards_are_disjoint_and_cover_the_selection() {
        let names = names(105);
        for kind in [PartitionKind::Count, PartitionKind::Hash] {
            for total in 1..=9 {
                let mut seen = vec![0u32; names.len()];
                let mut sizes = Vec::new();
                for p in (Partition {
                    kind,
                    shard: 1,
                    total,
                })
                .all()
                {
                    let mut size = 0;
                    for (i, name) in names.iter().enumerate() {
                        if p.contains(i as u64, name.as_bytes()) {
                            seen[i] += 1;
                            size += 1;
                        }
                    }
                    sizes.push(size);
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{kind:?} over {total}: some item is in {:?} shards",
                    seen.iter().collect::<BTreeSet<_>>()
                );
                if kind == PartitionKind::Count {
                    let (min, max) = (sizes.iter().min(), sizes.iter().max());
                    assert!(
                        max.unwrap() - min.unwrap() <= 1,
                        "count shards are uneven: {sizes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn count_is_round_robin_from_shard_one() {
        let p: Partition = "count:1/3".parse().unwrap();
        let mine: Vec<u64> = (0..10).filter(|&i| p.contains(i, b"")).collect();
        assert_eq!(mine, [0, 3, 6, 9]);
    }

    /// The hash is FNV-1a, fixed: a changed hash function would reshuffle
    /// every CI's shards, so it is pinned to published values.
    #[test]
    fn the_hash_is_fnv_1a_64() {
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        // The hash of a name, not its place: inserting an item moves no other.
        let p: Partition = "hash:2/4".parse().unwrap();
        assert_eq!(p.contains(0, b"a"), p.contains(99, b"a"));
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (bad, reason) in [
            (
                "count:0/4",
                "shard 0 does not exist: shards are numbered 1 to 4",
            ),
            (
                "count:5/4",
                "shard 5 does not exist: shards are numbered 1 to 4",
            ),
            ("hash:1/0", "the number of shards must be at least 1, not 0"),
            ("foo:1/2", "unknown partition kind `foo`"),
            ("count:1", "expected `count:K/N` or `hash:K/N`"),
            ("count", "expected `count:K/N` or `hash:K/N`"),
            ("count:x/2", "`x` is not a whole number"),
            ("count:-1/2", "`-1` is not a whole number"),
        ] {
            let error = bad.parse::<Partition>().unwrap_err().to_string();
            assert!(error.contains(reason), "{bad}: {error}");
        }
        let p: Partition = "hash:3/8".parse().unwrap();
        assert_eq!(p.to_string(), "hash:3/8");
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            "\"hash:3/8\"",
            "reports write it as the flag"
        );
        assert!(serde_json::from_str::<Partition>("\"hash:9/8\"").is_err());
    }

    #[test]
    fn a_selection_digest_tells_order_and_content() {
        let a = Selection::of(["x", "y"]);
        assert_eq!(a.size, 2);
        assert_eq!(a, Selection::of(["x", "y"]));
        assert_ne!(a.digest, Selection::of(["y", "x"]).digest);
        assert_ne!(a.digest, Selection::of(["xy"]).digest);
    }
}
