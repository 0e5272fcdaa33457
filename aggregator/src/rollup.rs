//! In-memory rollups waiting for the next flush, one [`Pending`] per shard.
//!
//! In: decoded records. Out: rows keyed by (zone, minute) whose values merge
//! by addition, plus the Kafka positions they cover. Nothing here touches
//! the database; [`crate::store`] writes a `Pending` in one transaction.

use std::collections::{BTreeMap, HashMap};

use schemas::Record;

const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// Minutes since the Unix epoch.
pub type Minute = i64;

pub fn minute_of(timestamp_ns: i64) -> Minute {
    timestamp_ns.div_euclid(NANOS_PER_MINUTE)
}

/// The mergeable values of one (zone, minute).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: i64,
    pub bytes: i64,
}

impl Counters {
    pub fn add(&mut self, record: &Record<'_>) {
        self.requests += 1;
        self.bytes += i64::try_from(record.response_bytes).unwrap_or(i64::MAX);
    }
}

/// Everything one shard has not yet stored.
#[derive(Debug, Default)]
pub struct Pending {
    pub rows: HashMap<(String, Minute), Counters>,
    /// Partition → the offset after the last message reflected in `rows`.
    pub positions: BTreeMap<i32, i64>,
}

impl Pending {
    pub fn add(&mut self, record: &Record<'_>) {
        let key = (record.zone.to_owned(), minute_of(record.timestamp_ns));
        self.rows.entry(key).or_default().add(record);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.positions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_floor_also_before_the_epoch() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(NANOS_PER_MINUTE - 1), 0);
        assert_eq!(minute_of(NANOS_PER_MINUTE), 1);
        assert_eq!(minute_of(-1), -1);
    }

    #[test]
    fn records_of_one_zone_and_minute_merge() {
        let mut p = Pending::default();
        let r = Record {
            zone: "a.example",
            response_bytes: 10,
            timestamp_ns: 61 * 1_000_000_000,
            ..Record::default()
        };
        p.add(&r);
        p.add(&Record {
            response_bytes: 5,
            ..r.clone()
        });
        p.add(&Record {
            zone: "b.example",
            ..r.clone()
        });
        assert_eq!(
            p.rows[&("a.example".to_owned(), 1)],
            Counters {
                requests: 2,
                bytes: 15
            }
        );
        assert_eq!(
            p.rows[&("b.example".to_owned(), 1)],
            Counters {
                requests: 1,
                bytes: 10
            }
        );
    }
}
