//! The message types shared by producers, brokers and consumers, and their ledger-entry encoding.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One queue of a topic. Ordered by topic, then queue number, so sorted lists of
/// queues are the same on every node (rebalance depends on it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueId {
    pub topic: String,
    pub queue: u32,
}

impl QueueId {
    pub fn new(topic: impl Into<String>, queue: u32) -> Self {
        QueueId { topic: topic.into(), queue }
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/q{}", self.topic, self.queue)
    }
}

/// A message as the producer built it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Set once by the producer and kept across retries, so duplicates of one
    /// send can be recognised downstream.
    pub msg_id: String,
    pub topic: String,
    pub tag: String,
    pub keys: Vec<String>,
    pub body: Vec<u8>,
    /// Set on a copy a consumer sent back after failing to process a message.
    pub redelivery: Option<Redelivery>,
}

/// The properties of a message a consumer sent back to its group's retry or
/// dead-letter topic (RocketMQ's `ORIGIN_MESSAGE_ID`, `RECONSUME_TIME` and
/// the delay the broker's schedule would apply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redelivery {
    /// The message id the producer gave the first copy.
    pub origin: String,
    /// How often the message was reconsumed with this copy (the first copy: 0).
    pub reconsumes: u32,
    /// Not to be processed before this wall-clock time (ms), by the consumer's clock.
    pub due_ms: u64,
}

/// A message with its offset within its queue, as a broker returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub offset: u64,
    pub message: Message,
}

/// The payload of the one ledger entry a broker stores for `m`.
pub fn encode(m: &Message) -> Vec<u8> {
    postcard::to_allocvec(m).expect("a message always serializes")
}

/// The message in a ledger entry, or `None` when the bytes are not one
/// (trailing bytes count as corruption too).
pub fn decode(bytes: &[u8]) -> Option<Message> {
    match postcard::take_from_bytes::<Message>(bytes) {
        Ok((m, [])) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Message {
        Message {
            msg_id: "producer-0-17".into(),
            topic: "orders".into(),
            tag: "paid".into(),
            keys: vec!["k1".into(), "k2".into()],
            body: b"hello".to_vec(),
            redelivery: None,
        }
    }

    #[test]
    fn queue_id_displays_and_orders_by_topic_then_queue() {
        assert_eq!(QueueId::new("orders", 3).to_string(), "orders/q3");
        let mut v = vec![QueueId::new("b", 0), QueueId::new("a", 10), QueueId::new("a", 2)];
        v.sort();
        assert_eq!(v, vec![QueueId::new("a", 2), QueueId::new("a", 10), QueueId::new("b", 0)]);
    }

    #[test]
    fn a_message_round_trips_and_garbage_does_not_decode() {
        let m = sample();
        let bytes = encode(&m);
        assert_eq!(decode(&bytes), Some(m));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        assert_eq!(decode(&[]), None);
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            msg_id in ".{0,12}",
            topic in "[a-z%]{0,8}",
            tag in ".{0,6}",
            keys in proptest::collection::vec(".{0,5}", 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            due in proptest::option::of(any::<u64>()),
        ) {
            let redelivery = due.map(|due_ms| Redelivery { origin: "o".into(), reconsumes: due_ms as u32 % 17, due_ms });
            let m = Message { msg_id, topic, tag, keys, body, redelivery };
            prop_assert_eq!(decode(&encode(&m)), Some(m));
        }

        #[test]
        fn stored_message_round_trips(offset in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..16)) {
            let s = StoredMessage { offset, message: Message { body, ..sample() } };
            let bytes = postcard::to_allocvec(&s).unwrap();
            prop_assert_eq!(postcard::from_bytes::<StoredMessage>(&bytes).unwrap(), s);
        }
    }
}
