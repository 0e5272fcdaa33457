//! Request-time quantiles: a logarithmic histogram in the manner of
//! DDSketch, over integer microseconds, with relative accuracy
//! [`RELATIVE_ACCURACY`] (1 %).
//!
//! In: one duration per request ([`Latency::add`], `request_time_us`). Out:
//! [`Latency::quantile`] for the API, and [`Latency::to_json`] for a jsonb
//! column.
//!
//! With γ = (1 + α)/(1 − α), a duration x ≥ 1 µs falls in bucket
//! i = ⌈ln x / ln γ⌉, that is γ^(i−1) < x ≤ γ^i, and 0 µs has a bucket of
//! its own. A bucket is represented by 2γ^i/(γ + 1), which is within α of
//! every value in it; so the estimate of a quantile is within α of the true
//! value of that quantile — guaranteed, whatever the distribution, the
//! count, or how many sketches were merged. A u32 of microseconds needs at
//! most 1110 buckets (0 to 1109).
//!
//! The quantile q is the value of the item of 0-based rank ⌊q·(n − 1)⌋ in
//! sorted order: q = 0 is the minimum, q = 1 the maximum, q = 0.5 of four
//! items the second.
//!
//! Storage: a JSON object, bucket → count, the key being the bucket index
//! in decimal or `"z"` for the zero bucket, empty buckets left out:
//! `{"z": 3, "345": 10, "346": 2}`. Merging is key-wise addition — in Rust
//! [`Latency::merge`], in SQL `sluice_add_counts` — and `sluice_quantile`
//! reads a quantile in SQL with the same arithmetic as here. That is why
//! this is not the `sketches-ddsketch` crate: its serialised form is an
//! opaque store with its own bucket offsets that SQL cannot add up, so a
//! query over a range of rows could not merge them.

use serde_json::{Map, Value};

use super::SketchError;

/// α: every quantile estimate is within this fraction of the true value.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// γ = (1 + α)/(1 − α); the SQL functions compute it the same way.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// The JSON key of the 0 µs bucket.
pub const ZERO_KEY: &str = "z";

/// The bucket of a duration of `us` ≥ 1 microseconds: ⌈ln us / ln γ⌉.
#[inline]
pub fn bucket(us: u32) -> usize {
    // ln(1) = 0, so every bucket is ≥ 0; ≤ 1109 for u32::MAX.
    (f64::from(us).ln() / GAMMA.ln()).ceil() as usize
}

/// The value that represents bucket `index`: 2γ^i/(γ + 1), in microseconds.
pub fn estimate(index: usize) -> f64 {
    2.0 * GAMMA.powf(index as f64) / (GAMMA + 1.0)
}

/// The largest bucket a u32 can reach; JSON naming a larger one is refused.
fn max_bucket() -> usize {
    bucket(u32::MAX)
}

/// Counts per bucket, held densely from the lowest to the highest bucket
/// seen (request times cluster within a few hundred buckets).
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Durations of 0 µs.
    zero: u64,
    /// The bucket `counts[0]` stands for.
    offset: usize,
    counts: Vec<u64>,
    /// Everything added, zeros included.
    total: u64,
}

impl Latency {
    /// An empty histogram; allocates nothing until the first duration
    /// above 0.
    pub fn new() -> Self {
        Latency::default()
    }

    /// Records one duration in microseconds.
    #[inline]
    pub fn add(&mut self, us: u32) {
        // Saturating: only counts read from hostile JSON come near.
        self.total = self.total.saturating_add(1);
        let n = if us == 0 {
            &mut self.zero
        } else {
            self.slot(bucket(us))
        };
        *n = n.saturating_add(1);
    }

    /// Adds every count of `other`, bucket by bucket.
    pub fn merge(&mut self, other: &Latency) {
        self.zero = self.zero.saturating_add(other.zero);
        self.total = self.total.saturating_add(other.total);
        if let Some(last) = other.counts.len().checked_sub(1) {
            self.cover(other.offset, other.offset + last);
            let start = other.offset - self.offset;
            let mine = &mut self.counts[start..start + other.counts.len()];
            for (m, o) in mine.iter_mut().zip(&other.counts) {
                *m = m.saturating_add(*o);
            }
        }
    }

    /// How many durations were added.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The estimated value, in microseconds, of the item of rank
    /// ⌊q·(n − 1)⌋ (0-based, sorted ascending); `None` when empty or when
    /// q is not within [0, 1].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let mut rank = (q * (self.total - 1) as f64).floor() as u64;
        if rank < self.zero {
            return Some(0.0);
        }
        rank -= self.zero;
        for (index, n) in self.buckets() {
            if rank < n {
                return Some(estimate(index));
            }
            rank -= n;
        }
        None
    }

    /// `{"z": zeros, "<bucket>": count, …}`, empty buckets left out.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if self.zero > 0 {
            map.insert(ZERO_KEY.to_owned(), self.zero.into());
        }
        for (index, n) in self.buckets() {
            map.insert(index.to_string(), n.into());
        }
        Value::Object(map)
    }

    /// Reads what [`Latency::to_json`] (or `sluice_add_counts`) wrote.
    /// Refuses anything else: a key that is neither `"z"` nor a bucket a
    /// u32 can reach, a count that is not a non-negative integer, a total
    /// beyond u64.
    pub fn from_json(json: &Value) -> Result<Latency, SketchError> {
        let err = |reason: String| SketchError::Json {
            sketch: "latency",
            reason,
        };
        let Value::Object(map) = json else {
            return Err(err(format!("not an object: {json}")));
        };
        let mut latency = Latency::default();
        let max = max_bucket();
        for (key, value) in map {
            let n = value
                .as_u64()
                .ok_or_else(|| err(format!("count of {key:?} is {value}")))?;
            latency.total = latency
                .total
                .checked_add(n)
                .ok_or_else(|| err("counts add up beyond 2^64".to_owned()))?;
            if key == ZERO_KEY {
                latency.zero += n;
                continue;
            }
            let index = key
                .parse::<usize>()
                .ok()
                .filter(|i| *i <= max)
                .ok_or_else(|| err(format!("bucket {key:?} is not \"z\" or 0 to {max}")))?;
            if n > 0 {
                *latency.slot(index) += n;
            }
        }
        Ok(latency)
    }

    /// Non-empty buckets, ascending: (bucket index, count).
    fn buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(move |(i, n)| (offset + i, *n))
    }

    #[inline]
    fn slot(&mut self, index: usize) -> &mut u64 {
        if index < self.offset || index - self.offset >= self.counts.len() {
            self.cover(index, index);
        }
        &mut self.counts[index - self.offset]
    }

    /// Grows `counts` to hold buckets `low..=high`, with some room beyond
    /// so that a slowly widening range does not reallocate on every add.
    #[cold]
    fn cover(&mut self, low: usize, high: usize) {
        const SLACK: usize = 16;
        if self.counts.is_empty() {
            self.offset = low.saturating_sub(SLACK / 2);
            self.counts = vec![0; high + SLACK / 2 + 1 - self.offset];
            return;
        }
        if low < self.offset {
            let new_offset = low.saturating_sub(SLACK);
            let mut counts = vec![0; self.offset - new_offset + self.counts.len()];
            counts[self.offset - new_offset..].copy_from_slice(&self.counts);
            self.counts = counts;
            self.offset = new_offset;
        }
        let end = self.offset + self.counts.len();
        if high >= end {
            self.counts.resize(high + SLACK + 1 - self.offset, 0);
        }
    }
}

/// Equal when they hold the same counts, however their buffers are laid out.
impl PartialEq for Latency {
    fn eq(&self, other: &Self) -> bool {
        self.zero == other.zero && self.total == other.total && self.buckets().eq(other.buckets())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// The reference: sort, take the item of rank ⌊q·(n − 1)⌋.
    fn exact(sorted: &[u32], q: f64) -> f64 {
        f64::from(sorted[(q * (sorted.len() - 1) as f64).floor() as usize])
    }

    const QS: [f64; 12] = [
        0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0,
    ];

    fn assert_within_alpha(values: &[u32], sketch: &Latency) {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        assert_eq!(sketch.count(), values.len() as u64);
        for q in QS {
            let truth = exact(&sorted, q);
            let estimate = sketch.quantile(q).unwrap();
            let error = if truth == 0.0 {
                estimate
            } else {
                (estimate - truth).abs() / truth
            };
            assert!(
                error <= RELATIVE_ACCURACY * (1.0 + 1e-9),
                "q = {q}: estimated {estimate}, true {truth} ({error})"
            );
        }
    }

    fn sketch_of(values: &[u32]) -> Latency {
        let mut l = Latency::new();
        values.iter().for_each(|v| l.add(*v));
        l
    }

    fn random_values(seed: u64, n: usize) -> Vec<Vec<u32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let uniform = (0..n).map(|_| rng.random_range(0..2_000_000)).collect();
        // exp(normal): median 20 ms, a long tail.
        let lognormal = (0..n)
            .map(|_| {
                let normal: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
                (20_000.0 * (1.5 * normal).exp()).min(f64::from(u32::MAX)) as u32
            })
            .collect();
        // A third cache hits at 0 µs, the rest spread over the whole range.
        let with_zeros = (0..n)
            .map(|_| {
                if rng.random_bool(0.33) {
                    0
                } else {
                    rng.random::<u32>() >> rng.random_range(0..32)
                }
            })
            .collect();
        vec![uniform, lognormal, with_zeros]
    }

    #[test]
    fn quantiles_within_alpha_on_random_data() {
        for seed in 0..5 {
            for values in random_values(seed, 20_000) {
                assert_within_alpha(&values, &sketch_of(&values));
            }
        }
    }

    #[test]
    fn merged_quantiles_within_alpha() {
        let parts = random_values(7, 10_000);
        let mut merged = Latency::new();
        for part in &parts {
            merged.merge(&sketch_of(part));
        }
        let all: Vec<u32> = parts.concat();
        assert_within_alpha(&all, &merged);
        assert_eq!(merged, sketch_of(&all));
    }

    #[test]
    fn edges() {
        assert_eq!(Latency::new().quantile(0.5), None);
        let l = sketch_of(&[0, 1, u32::MAX]);
        assert_eq!(l.quantile(0.0), Some(0.0));
        assert_eq!(l.quantile(1.1), None);
        assert_eq!(l.quantile(f64::NAN), None);
        assert_within_alpha(&[0, 1, u32::MAX], &l);
        assert_within_alpha(&[1, 1, 1, 2], &sketch_of(&[1, 1, 1, 2]));
        assert_eq!(bucket(1), 0);
        assert_eq!(max_bucket(), 1109);
    }

    #[test]
    fn json_format() {
        let l = sketch_of(&[0, 0, 1, 1000, 1000]);
        let json = l.to_json();
        assert_eq!(
            json,
            serde_json::json!({"z": 2, "0": 1, bucket(1000).to_string(): 2})
        );
        assert_eq!(Latency::from_json(&json).unwrap(), l);
        assert_eq!(
            Latency::from_json(&serde_json::json!({})).unwrap(),
            Latency::new()
        );
        for bad in [
            serde_json::json!([]),
            serde_json::json!({"x": 1}),
            serde_json::json!({"-1": 1}),
            serde_json::json!({"1110": 1}),
            serde_json::json!({"1": -1}),
            serde_json::json!({"1": 1.5}),
            serde_json::json!({"1": u64::MAX, "2": 1}),
        ] {
            assert!(Latency::from_json(&bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_values_within_alpha(values in proptest::collection::vec(any::<u32>(), 1..300), split in any::<prop::sample::Index>()) {
            let (a, b) = values.split_at(split.index(values.len()));
            let mut merged = sketch_of(a);
            merged.merge(&sketch_of(b));
            assert_within_alpha(&values, &merged);
            prop_assert_eq!(Latency::from_json(&merged.to_json()).unwrap(), merged);
        }

        #[test]
        fn from_json_never_panics(entries in proptest::collection::btree_map(
            prop_oneof!["z", "[0-9]{1,5}", "-?[0-9a-z]{0,4}", ".*"],
            prop_oneof![any::<u64>().prop_map(Value::from), any::<i64>().prop_map(Value::from), any::<f64>().prop_map(Value::from), ".*".prop_map(Value::from)],
            0..20,
        )) {
            let json = Value::Object(entries.into_iter().collect());
            if let Ok(mut l) = Latency::from_json(&json) {
                let other = l.clone();
                l.merge(&other);
                l.add(0);
                l.add(1000);
                let _ = (l.quantile(0.5), l.to_json());
            }
        }
    }
}
