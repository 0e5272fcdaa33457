//! Which shard holds a zone: rendezvous (highest-random-weight) hashing.
//!
//! Every shard scores every zone with `xxh3_64(shard name ‖ 0x00 ‖ zone)`;
//! the zone lives on the highest score. The choice depends only on the set of
//! shard *names*, not their order, and adding a shard moves only the zones
//! the new shard now wins (about 1/N of them) — every other zone stays where
//! it was. Removing a shard moves only that shard's zones. This is the whole
//! placement rule; the SQL views and the tests rely on nothing else.

use xxhash_rust::xxh3::Xxh3;

/// Shard names in configuration order; a shard is referred to by its index.
#[derive(Debug, Clone)]
pub struct ShardMap {
    names: Vec<String>,
}

impl ShardMap {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        ShardMap {
            names: names.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, shard: usize) -> &str {
        &self.names[shard]
    }

    /// The index of the shard that owns `zone`.
    pub fn shard_of(&self, zone: &str) -> usize {
        let score = |name: &str| {
            let mut h = Xxh3::new();
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(zone.as_bytes());
            h.digest()
        };
        // Ties are astronomically unlikely; break them by name for determinism.
        (0..self.names.len())
            .max_by_key(|&i| (score(&self.names[i]), &self.names[i]))
            .expect("a shard map is never empty")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(names: &[&str]) -> ShardMap {
        ShardMap::new(names.iter().map(|s| s.to_string()))
    }

    #[test]
    fn order_of_the_list_does_not_matter() {
        let a = map(&["s0", "s1", "s2"]);
        let b = map(&["s2", "s0", "s1"]);
        for i in 0..1000 {
            let zone = format!("zone{i}.example");
            assert_eq!(a.name(a.shard_of(&zone)), b.name(b.shard_of(&zone)));
        }
    }

    #[test]
    fn adding_a_shard_moves_only_zones_to_the_new_shard() {
        let before = map(&["s0", "s1", "s2"]);
        let after = map(&["s0", "s1", "s2", "s3"]);
        let mut moved = 0;
        for i in 0..10_000 {
            let zone = format!("zone{i}.example");
            let (old, new) = (
                before.name(before.shard_of(&zone)),
                after.name(after.shard_of(&zone)),
            );
            if old != new {
                assert_eq!(new, "s3", "{zone} moved between old shards");
                moved += 1;
            }
        }
        // Expect about a quarter; allow generous slack.
        assert!((2000..3000).contains(&moved), "moved {moved} of 10000");
    }

    #[test]
    fn zones_spread_over_all_shards() {
        let m = map(&["shard0", "shard1"]);
        let on_first = (0..1000)
            .filter(|i| m.shard_of(&format!("z{i}")) == 0)
            .count();
        assert!(
            (400..600).contains(&on_first),
            "{on_first} of 1000 on shard0"
        );
    }
}
