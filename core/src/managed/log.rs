//! A managed ledger's ledger list, as kept in the metadata service, and the
//! pure decisions on it: closing the last ledger, adding the next one, finding
//! an offset, and when to roll over.

use crate::bookie::{EntryId, LedgerId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One ledger of a log: offsets `first ..` hold its entries `0 ..`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub ledger: LedgerId,
    pub first: u64,
    /// How many entries it holds, once closed; `None` while it is open.
    pub entries: Option<u64>,
}

/// The ordered ledgers of one log. Only the last may be open, and offsets are
/// dense: each ledger starts where the one before it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMeta {
    pub segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("the last ledger is not open")]
    NoOpenLedger,
    #[error("the last ledger {0} is still open")]
    StillOpen(LedgerId),
    #[error("ledger {0} is in the log already")]
    Duplicate(LedgerId),
}

impl LogMeta {
    /// The ledger open for writes, if the last one is.
    pub fn open_ledger(&self) -> Option<LedgerId> {
        self.segments.last().filter(|s| s.entries.is_none()).map(|s| s.ledger)
    }

    /// The offset after the last closed ledger: where an open ledger starts.
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.first + s.entries.unwrap_or(0))
    }

    /// The log with its open ledger closed at `entries` entries.
    pub fn closed_last(&self, entries: u64) -> Result<LogMeta, LogError> {
        let mut next = self.clone();
        match next.segments.last_mut() {
            Some(s) if s.entries.is_none() => s.entries = Some(entries),
            _ => return Err(LogError::NoOpenLedger),
        }
        Ok(next)
    }

    /// The log with `ledger` added as its open ledger, after the last one.
    pub fn with_new(&self, ledger: LedgerId) -> Result<LogMeta, LogError> {
        if let Some(open) = self.open_ledger() {
            return Err(LogError::StillOpen(open));
        }
        if self.segments.iter().any(|s| s.ledger == ledger) {
            return Err(LogError::Duplicate(ledger));
        }
        let mut next = self.clone();
        next.segments.push(Segment { ledger, first: self.end(), entries: None });
        Ok(next)
    }

    /// The ledger and entry of `offset`: in a closed ledger, or (any offset
    /// past the closed ones) in the open ledger, whose writer knows how far
    /// it is durable.
    pub fn locate(&self, offset: u64) -> Option<(LedgerId, EntryId)> {
        let i = self.segments.partition_point(|s| s.first <= offset).checked_sub(1)?;
        let s = &self.segments[i];
        match s.entries {
            Some(n) if offset >= s.first + n => None,
            _ => Some((s.ledger, (offset - s.first) as EntryId)),
        }
    }

    /// Whether the list keeps its rules: dense offsets, only the last open,
    /// no ledger twice. The explanation of the first broken rule otherwise.
    pub fn well_formed(&self) -> Result<(), String> {
        let mut end = 0;
        for (i, s) in self.segments.iter().enumerate() {
            if s.first != end {
                return Err(format!(
                    "ledger {} starts at offset {} but the one before ends at {end}",
                    s.ledger, s.first
                ));
            }
            if self.segments[..i].iter().any(|o| o.ledger == s.ledger) {
                return Err(format!("ledger {} appears twice", s.ledger));
            }
            match s.entries {
                Some(n) => end += n,
                None if i + 1 < self.segments.len() => {
                    return Err(format!("ledger {} is open but not last", s.ledger));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// When the open ledger is rolled over to a new one (Pulsar's defaults: 50,000
/// entries, a size, 10 to 240 minutes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollover {
    pub max_entries: u64,
    pub max_bytes: u64,
    /// No rollover by size or entries before this age.
    pub min_age: Duration,
    /// A ledger with entries rolls over at this age whatever its size.
    pub max_age: Duration,
}

impl Default for Rollover {
    fn default() -> Rollover {
        Rollover {
            max_entries: 50_000,
            max_bytes: 1 << 30,
            min_age: Duration::from_secs(10 * 60),
            max_age: Duration::from_secs(240 * 60),
        }
    }
}

impl Rollover {
    /// Whether a ledger that took `entries` adds of `bytes` over `age` is full.
    pub fn due(&self, entries: u64, bytes: u64, age: Duration) -> bool {
        let full = entries >= self.max_entries || bytes >= self.max_bytes;
        (full && age >= self.min_age) || (entries > 0 && age >= self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A log built by closing and adding: `sizes[i]` entries in ledger i, the
    /// last left open when `open`.
    fn build(sizes: &[u64], open: bool) -> LogMeta {
        let mut log = LogMeta::default();
        for (i, n) in sizes.iter().enumerate() {
            log = log.with_new(10 + i as LedgerId).unwrap();
            if !open || i + 1 < sizes.len() {
                log = log.closed_last(*n).unwrap();
            }
        }
        log
    }

    #[test]
    fn an_open_ledger_must_close_before_the_next() {
        let log = LogMeta::default().with_new(7).unwrap();
        assert_eq!(log.with_new(8), Err(LogError::StillOpen(7)));
        let log = log.closed_last(3).unwrap();
        assert_eq!(log.closed_last(4), Err(LogError::NoOpenLedger));
        assert_eq!(log.with_new(7), Err(LogError::Duplicate(7)));
        let log = log.with_new(8).unwrap();
        assert_eq!(
            (log.end(), log.open_ledger(), log.locate(2), log.locate(3)),
            (3, Some(8), Some((7, 2)), Some((8, 0)))
        );
    }

    #[test]
    fn broken_lists_are_named() {
        let gap = LogMeta {
            segments: vec![
                Segment { ledger: 1, first: 0, entries: Some(2) },
                Segment { ledger: 2, first: 3, entries: None },
            ],
        };
        assert!(gap.well_formed().unwrap_err().contains("starts at offset 3"));
        let open_inside = LogMeta {
            segments: vec![
                Segment { ledger: 1, first: 0, entries: None },
                Segment { ledger: 2, first: 0, entries: None },
            ],
        };
        assert!(open_inside.well_formed().unwrap_err().contains("open but not last"));
    }

    #[test]
    fn rollover_waits_for_the_minimum_age_and_forces_at_the_maximum() {
        let r = Rollover {
            max_entries: 10,
            max_bytes: 100,
            min_age: Duration::from_secs(5),
            max_age: Duration::from_secs(60),
        };
        assert!(!r.due(10, 0, Duration::from_secs(4)));
        assert!(r.due(10, 0, Duration::from_secs(5)));
        assert!(r.due(1, 100, Duration::from_secs(5)));
        assert!(!r.due(9, 99, Duration::from_secs(59)));
        assert!(r.due(1, 1, Duration::from_secs(60)));
        assert!(!r.due(0, 0, Duration::from_secs(600)), "an empty ledger never rolls over");
    }

    proptest! {
        /// Every offset below the end maps to exactly one (ledger, entry), in
        /// order, and back: offsets are dense across ledgers.
        #[test]
        fn offsets_are_dense_and_locate_inverts_them(sizes in proptest::collection::vec(0u64..6, 0..8), open in any::<bool>()) {
            let log = build(&sizes, open);
            prop_assert!(log.well_formed().is_ok());
            let closed: u64 = if open && !sizes.is_empty() { sizes[..sizes.len() - 1].iter().sum() } else { sizes.iter().sum() };
            prop_assert_eq!(log.end(), closed);
            let mut expected = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                if !(open && i + 1 == sizes.len()) {
                    expected.extend((0..*n).map(|e| (10 + i as LedgerId, e as EntryId)));
                }
            }
            let located: Vec<_> = (0..closed).map(|o| log.locate(o).unwrap()).collect();
            prop_assert_eq!(located, expected);
            // Past the closed ledgers: the open ledger, or nothing.
            let beyond = log.locate(closed + 2);
            prop_assert_eq!(beyond, log.open_ledger().map(|l| (l, 2)));
        }

        /// Whatever sequence of closes and adds an owner tries, what the list
        /// accepts keeps it well formed, and a refused step leaves it unchanged.
        #[test]
        fn only_well_formed_lists_come_out(steps in proptest::collection::vec((any::<bool>(), 0u64..5, 0u64..6), 0..20)) {
            let mut log = LogMeta::default();
            for (close, n, ledger) in steps {
                let next = if close { log.closed_last(n) } else { log.with_new(ledger) };
                if let Ok(next) = next {
                    prop_assert!(next.well_formed().is_ok(), "{:?}", next);
                    prop_assert!(next.end() >= log.end());
                    log = next;
                }
            }
        }
    }
}
