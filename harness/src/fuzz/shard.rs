//! `fuzz --partition`: every shard generates the whole case stream of the
//! seed (the regressions replayed first, then the new cases) and exchanges
//! only its own cases, so the shards of one seed are disjoint and together
//! the unsharded run.
//!
//! `count:K/N` deals by a case's place in the stream, `hash:K/N` by the
//! case's digest ([`Case::digest`], the stable hash its fixture name is made
//! of), as nextest deals tests by name.

use std::cell::Cell;

use proptest::strategy::{NewTree, Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::cases::Case;
use crate::partition::Partition;

/// A case strategy cut to one shard: its values are `(mine, case)`.
#[derive(Debug)]
pub struct Sharded<S> {
    inner: S,
    partition: Option<Partition>,
    /// Cases generated so far: the place of the next one in the stream.
    generated: Cell<u64>,
}

impl<S> Sharded<S> {
    pub fn new(inner: S, partition: Option<Partition>) -> Self {
        Self {
            inner,
            partition,
            generated: Cell::new(0),
        }
    }

    /// How many cases of the stream were generated (run or not).
    pub fn generated(&self) -> u64 {
        self.generated.get()
    }
}

impl<S: Strategy<Value = Case>> Strategy for Sharded<S> {
    type Tree = ShardedTree<S::Tree>;
    type Value = (bool, Case);

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let inner = self.inner.new_tree(runner)?;
        let index = self.generated.replace(self.generated.get() + 1);
        let mine = self
            .partition
            .is_none_or(|p| p.contains(index, &inner.current().digest().to_le_bytes()));
        Ok(ShardedTree { inner, mine })
    }
}

/// A case and whether it is this shard's; shrinking keeps the verdict (only
/// a case of this shard can fail, and its shrinks are all run).
#[derive(Debug)]
pub struct ShardedTree<T> {
    inner: T,
    mine: bool,
}

impl<T: ValueTree<Value = Case>> ValueTree for ShardedTree<T> {
    type Value = (bool, Case);

    fn current(&self) -> Self::Value {
        (self.mine, self.inner.current())
    }

    fn simplify(&mut self) -> bool {
        self.inner.simplify()
    }

    fn complicate(&mut self) -> bool {
        self.inner.complicate()
    }
}

#[cfg(test)]
mod tests {
    use proptest::test_runner::Config;

    use super::super::cases::{self, Scope};
    use super::*;

    /// The digests of the cases the shard `partition` would run, and of all.
    fn stream(partition: Option<Partition>, n: usize) -> Vec<(bool, u64)> {
        let strategy = Sharded::new(cases::case(Scope::default()), partition);
        let mut runner = TestRunner::new_with_rng(Config::default(), super::super::round::rng(11));
        let drawn = (0..n)
            .map(|_| {
                let (mine, case) = strategy.new_tree(&mut runner).unwrap().current();
                (mine, case.digest())
            })
            .collect();
        assert_eq!(strategy.generated(), n as u64);
        drawn
    }

    #[test]
    fn shards_of_a_seed_are_disjoint_and_make_the_whole_stream() {
        let n = 120;
        let whole = stream(None, n);
        assert!(whole.iter().all(|(mine, _)| *mine));
        for spec in [
            "count:1/1",
            "count:1/3",
            "count:1/4",
            "hash:1/2",
            "hash:1/5",
        ] {
            let cut: Partition = spec.parse().unwrap();
            let mut runs = vec![0u32; n];
            for p in cut.all() {
                let shard = stream(Some(p), n);
                for (i, ((mine, digest), (_, expected))) in shard.iter().zip(&whole).enumerate() {
                    assert_eq!(
                        digest, expected,
                        "{p}: the stream is the same in every shard"
                    );
                    runs[i] += u32::from(*mine);
                }
                if p.total > 1 {
                    let size = shard.iter().filter(|(m, _)| *m).count();
                    assert!(size > 0 && size < n, "{p} runs {size} of {n}");
                }
            }
            assert!(
                runs.iter().all(|&r| r == 1),
                "{spec}: a case ran in other than one shard: {runs:?}"
            );
        }
    }

    #[test]
    fn count_deals_by_place_and_hash_by_digest() {
        let p: Partition = "count:2/3".parse().unwrap();
        let places: Vec<usize> = stream(Some(p), 9)
            .iter()
            .enumerate()
            .filter(|(_, (mine, _))| *mine)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(places, [1, 4, 7]);
        let p: Partition = "hash:2/3".parse().unwrap();
        for (mine, digest) in stream(Some(p), 30) {
            assert_eq!(mine, p.contains(u64::MAX, &digest.to_le_bytes()));
        }
    }
}
