//! What becomes of a message a non-ordered consumer failed to process
//! (RocketMQ's `sendMessageBack`): it goes to the group's retry topic with a
//! growing delay, and after the maximum of reconsumes to the group's
//! dead-letter topic, never to be delivered to the group again.

use std::time::Duration;

/// Reconsumes before a message goes to the dead-letter topic (`maxReconsumeTimes`).
pub const MAX_RECONSUMES: u32 = 16;

/// RocketMQ's delay levels (`messageDelayLevel`), level 1 first.
pub const DELAY_LEVELS: [Duration; 18] = {
    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }
    [
        s(1),
        s(5),
        s(10),
        s(30),
        s(60),
        s(120),
        s(180),
        s(240),
        s(300),
        s(360),
        s(420),
        s(480),
        s(540),
        s(600),
        s(1_200),
        s(1_800),
        s(3_600),
        s(7_200),
    ]
};

/// The retry topic of `group`.
pub fn retry_topic(group: &str) -> String {
    format!("%RETRY%{group}")
}

/// The dead-letter topic of `group`.
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// Where a failed message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// To the retry topic, delivered again after `delay`, as reconsume number `reconsumes`.
    Retry { reconsumes: u32, delay: Duration },
    /// To the dead-letter topic: it was reconsumed the maximum number of times.
    DeadLetter,
}

/// The fate of a message that failed after it was reconsumed `reconsumes`
/// times (0: its first delivery failed), with `max` reconsumes allowed. The
/// first retry waits level 3 (10 s), each next one a level more, the last
/// levels repeating (RocketMQ: `delayLevel = 3 + reconsumeTimes`).
pub fn on_failure(reconsumes: u32, max: u32) -> Fate {
    if reconsumes >= max {
        return Fate::DeadLetter;
    }
    let level = (3 + reconsumes as usize).min(DELAY_LEVELS.len());
    Fate::Retry { reconsumes: reconsumes + 1, delay: DELAY_LEVELS[level - 1] }
}

/// A group's handling of failed messages: how many reconsumes before the
/// dead-letter topic, and the delay levels shortened by `delay_divisor`
/// (1: RocketMQ's own; a simulation shortens them to fit its run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub max_reconsumes: u32,
    pub delay_divisor: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { max_reconsumes: MAX_RECONSUMES, delay_divisor: 1 }
    }
}

impl Policy {
    /// The longest delay a retried message may wait.
    pub fn longest_delay(&self) -> Duration {
        DELAY_LEVELS[DELAY_LEVELS.len() - 1] / self.delay_divisor.max(1)
    }

    /// The fate of a message that failed after `reconsumes` reconsumes.
    pub fn fate(&self, reconsumes: u32) -> Fate {
        match on_failure(reconsumes, self.max_reconsumes) {
            Fate::Retry { reconsumes, delay } => Fate::Retry { reconsumes, delay: delay / self.delay_divisor.max(1) },
            Fate::DeadLetter => Fate::DeadLetter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rocketmq_defaults() {
        assert_eq!(on_failure(0, MAX_RECONSUMES), Fate::Retry { reconsumes: 1, delay: Duration::from_secs(10) });
        assert_eq!(on_failure(1, MAX_RECONSUMES), Fate::Retry { reconsumes: 2, delay: Duration::from_secs(30) });
        assert_eq!(on_failure(15, MAX_RECONSUMES), Fate::Retry { reconsumes: 16, delay: Duration::from_secs(7_200) });
        assert_eq!(on_failure(16, MAX_RECONSUMES), Fate::DeadLetter);
        assert_eq!((retry_topic("g"), dlq_topic("g")), ("%RETRY%g".to_string(), "%DLQ%g".to_string()));
    }

    #[test]
    fn a_policy_shortens_the_delays_and_keeps_the_count() {
        let p = Policy { max_reconsumes: 2, delay_divisor: 1_000 };
        assert_eq!(p.fate(0), Fate::Retry { reconsumes: 1, delay: Duration::from_millis(10) });
        assert_eq!(p.fate(1), Fate::Retry { reconsumes: 2, delay: Duration::from_millis(30) });
        assert_eq!(p.fate(2), Fate::DeadLetter);
        assert_eq!(Policy::default().fate(0), on_failure(0, MAX_RECONSUMES));
        assert_eq!(p.longest_delay(), Duration::from_millis(7_200));
    }

    proptest! {
        /// A message reaches the dead-letter topic exactly after its last
        /// allowed reconsume, never before; the delays never shrink.
        #[test]
        fn dead_letter_only_after_the_last_retry(max in 0u32..40) {
            let mut reconsumes = 0;
            let mut last = Duration::ZERO;
            while let Fate::Retry { reconsumes: next, delay } = on_failure(reconsumes, max) {
                prop_assert_eq!(next, reconsumes + 1);
                prop_assert!(delay >= last);
                last = delay;
                reconsumes = next;
            }
            prop_assert_eq!(reconsumes, max);
        }
    }
}
