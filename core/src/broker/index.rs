//! A queue's index by message key, as RocketMQ's IndexService keeps one: built
//! from the queue's log in offset order and never ahead of it. A broker that
//! takes a queue over starts an empty index and catches it up by reading the
//! log, so the index is derived state and the broker stays stateless.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    /// Every offset below this one is indexed; nothing at or above it is.
    upto: u64,
    offsets: BTreeMap<String, Vec<u64>>,
}

impl KeyIndex {
    /// An index that takes `upto` as already indexed (the planted bug
    /// `index-skips-taken-over-log` starts a taken-over log's index at its end).
    pub fn starting_at(upto: u64) -> KeyIndex {
        KeyIndex { upto, offsets: BTreeMap::new() }
    }

    /// The first offset not indexed yet.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// Indexes the message at `offset` under `keys` if it is the next one;
    /// returns whether it was (an offset out of turn is left to catching up).
    pub fn add(&mut self, offset: u64, keys: &[String]) -> bool {
        if offset != self.upto {
            return false;
        }
        for key in keys {
            let list = self.offsets.entry(key.clone()).or_default();
            // One message may name a key twice; it is indexed once.
            if list.last() != Some(&offset) {
                list.push(offset);
            }
        }
        self.upto += 1;
        true
    }

    /// The offsets of the messages with `key`, ascending.
    pub fn lookup(&self, key: &str) -> &[u64] {
        self.offsets.get(key).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order the messages are offered in, the index holds
        /// exactly the contiguous prefix it took, and a lookup gives every
        /// offset of that prefix whose message has the key, ascending.
        #[test]
        fn lookups_give_exactly_the_indexed_messages_with_the_key(
            log in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3), 0..40),
            order in proptest::collection::vec(0usize..40, 0..120),
        ) {
            let keys = |o: usize| log[o].iter().map(|k| format!("k{k}")).collect::<Vec<_>>();
            let mut index = KeyIndex::default();
            for o in order.into_iter().filter(|o| *o < log.len()) {
                let before = index.upto();
                let took = index.add(o as u64, &keys(o));
                prop_assert_eq!(took, o as u64 == before);
            }
            let upto = index.upto() as usize;
            for k in 0..4u8 {
                let key = format!("k{k}");
                let want: Vec<u64> = (0..upto).filter(|&o| keys(o).contains(&key)).map(|o| o as u64).collect();
                prop_assert_eq!(index.lookup(&key), want.as_slice());
            }
        }
    }
}
