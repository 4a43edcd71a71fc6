//! Planted bugs: named protocol mistakes, off by default, each switched on at the
//! exact place where the mistake would live, so users can measure whether a
//! checker and a fault profile catch it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// The metadata service answers a write before its log record is fsynced.
    MetaAckBeforeFsync,
    /// A bookie acknowledges an add before its journal is fsynced.
    BookieAckBeforeFsync,
    /// Recovery reads do not fence (BookKeeper #2614).
    RecoveryReadsNoFence,
    /// Recovery starts reading at LAC+1 even below the last ensemble's first entry (BookKeeper #2615).
    RecoveryStartAtLac,
    /// The writer treats "fenced" as a bookie failure and IN_RECOVERY metadata as nothing special.
    WriterIgnoresFenced,
    /// Recovery proceeds after a single fence response instead of quorum coverage.
    FenceOneResponse,
    /// The replication worker points the ensemble at the replacement before copying.
    AuditorMarksBeforeCopy,
    /// A new owner of a log reads its last ledger's LAC instead of recovering it, so the old owner is not fenced.
    TakeoverWithoutFencing,
    /// The broker serves pulls from entries not yet acknowledged.
    CacheServesPastLac,
    /// The broker answers SEND_OK before Qa bookies stored the message.
    BrokerAckBeforeQuorum,
    /// The NameServer never drops a silent broker.
    NameserverNeverExpires,
    /// The consumer commits what it pulled before processing it.
    ConsumerCommitBeforeProcess,
    /// The broker keeps consumer offsets only in memory.
    OffsetsInMemory,
    /// A producer retry gets a new message id.
    ProducerRetryNewId,
    /// A broker that takes a queue over indexes keys only of what it stores from then on.
    IndexSkipsTakenOverLog,
    /// The broker never checks back on halves.
    TxNoCheckback,
    /// A re-put half is not durable before the check offset moves (RocketMQ #544).
    TxImmunityLosesHalf,
    /// Two copies of one end message both commit (RocketMQ #5574).
    TxDuplicateEndCommitsTwice,
    /// An end message after a check-back resolved the half is applied again (RocketMQ #8158).
    TxEndAfterCheck,
    /// A failed check pass stops the queue's checks for good (RocketMQ #9500).
    TxCheckOffsetStuck,
    /// A half's age is taken from the producer's clock (RocketMQ #9640).
    TxCheckByProducerClock,
    /// A commit writes the op record before the real message.
    TxOpBeforeReal,
    /// Check-backs ignore the maximum.
    TxCheckUnbounded,
    /// A half is stored in its real queue too.
    TxHalfVisible,
    /// An ordered consumer takes a message that failed as consumed and goes on.
    OrderedSkipOnFailure,
    /// A broker that opened a queue grants its lock at once, though an earlier owner's lease may still run.
    OrderedLockOutlivesOwner,
    /// A consumer sends a message to the dead-letter topic one reconsume early.
    DlqBeforeMaxRetries,
    /// A consumer keeps consuming and committing a queue a rebalance took away.
    RebalanceOverlap,
    /// The leader broker, once elected, never checks its lock or a newer leader's term again.
    LeaderActsAfterLosingLock,
    /// A log's owner places every rolled-over ledger on the bookies it saw when it opened the log.
    RolloverOnOldBookies,
}

impl Bug {
    pub const ALL: &'static [Bug] = &[
        Bug::MetaAckBeforeFsync,
        Bug::BookieAckBeforeFsync,
        Bug::RecoveryReadsNoFence,
        Bug::RecoveryStartAtLac,
        Bug::WriterIgnoresFenced,
        Bug::FenceOneResponse,
        Bug::AuditorMarksBeforeCopy,
        Bug::TakeoverWithoutFencing,
        Bug::CacheServesPastLac,
        Bug::BrokerAckBeforeQuorum,
        Bug::NameserverNeverExpires,
        Bug::ConsumerCommitBeforeProcess,
        Bug::OffsetsInMemory,
        Bug::ProducerRetryNewId,
        Bug::IndexSkipsTakenOverLog,
        Bug::TxNoCheckback,
        Bug::TxImmunityLosesHalf,
        Bug::TxDuplicateEndCommitsTwice,
        Bug::TxEndAfterCheck,
        Bug::TxCheckOffsetStuck,
        Bug::TxCheckByProducerClock,
        Bug::TxOpBeforeReal,
        Bug::TxCheckUnbounded,
        Bug::TxHalfVisible,
        Bug::OrderedSkipOnFailure,
        Bug::OrderedLockOutlivesOwner,
        Bug::DlqBeforeMaxRetries,
        Bug::RebalanceOverlap,
        Bug::LeaderActsAfterLosingLock,
        Bug::RolloverOnOldBookies,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::MetaAckBeforeFsync => "meta-ack-before-fsync",
            Bug::BookieAckBeforeFsync => "bookie-ack-before-fsync",
            Bug::RecoveryReadsNoFence => "recovery-reads-no-fence",
            Bug::RecoveryStartAtLac => "recovery-start-at-lac",
            Bug::WriterIgnoresFenced => "writer-ignores-fenced",
            Bug::FenceOneResponse => "fence-one-response",
            Bug::AuditorMarksBeforeCopy => "auditor-marks-before-copy",
            Bug::TakeoverWithoutFencing => "takeover-without-fencing",
            Bug::CacheServesPastLac => "cache-serves-past-lac",
            Bug::BrokerAckBeforeQuorum => "broker-ack-before-quorum",
            Bug::NameserverNeverExpires => "nameserver-never-expires",
            Bug::ConsumerCommitBeforeProcess => "consumer-commit-before-process",
            Bug::OffsetsInMemory => "offsets-in-memory",
            Bug::ProducerRetryNewId => "producer-retry-new-id",
            Bug::IndexSkipsTakenOverLog => "index-skips-taken-over-log",
            Bug::TxNoCheckback => "tx-no-checkback",
            Bug::TxImmunityLosesHalf => "tx-immunity-loses-half",
            Bug::TxDuplicateEndCommitsTwice => "tx-duplicate-end-commits-twice",
            Bug::TxEndAfterCheck => "tx-end-after-check",
            Bug::TxCheckOffsetStuck => "tx-check-offset-stuck",
            Bug::TxCheckByProducerClock => "tx-check-by-producer-clock",
            Bug::TxOpBeforeReal => "tx-op-before-real",
            Bug::TxCheckUnbounded => "tx-check-unbounded",
            Bug::TxHalfVisible => "tx-half-visible",
            Bug::OrderedSkipOnFailure => "ordered-skip-on-failure",
            Bug::OrderedLockOutlivesOwner => "ordered-lock-outlives-owner",
            Bug::DlqBeforeMaxRetries => "dlq-before-max-retries",
            Bug::RebalanceOverlap => "rebalance-overlap",
            Bug::LeaderActsAfterLosingLock => "leader-acts-after-losing-lock",
            Bug::RolloverOnOldBookies => "rollover-on-old-bookies",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Bug::MetaAckBeforeFsync => {
                "metadata service acknowledges writes before fsync; a crash loses acknowledged writes"
            }
            Bug::BookieAckBeforeFsync => "bookie acknowledges an add before its journal is fsynced",
            Bug::RecoveryReadsNoFence => "ledger recovery reads do not fence the bookies they read (BookKeeper #2614)",
            Bug::RecoveryStartAtLac => {
                "ledger recovery reads from LAC+1 even below the last ensemble's first entry (BookKeeper #2615)"
            }
            Bug::WriterIgnoresFenced => "the ledger writer replaces fenced bookies and ignores IN_RECOVERY metadata",
            Bug::FenceOneResponse => "ledger recovery proceeds after one fence response, not quorum coverage",
            Bug::AuditorMarksBeforeCopy => {
                "re-replication points a fragment at its new bookie before copying the entries"
            }
            Bug::TakeoverWithoutFencing => {
                "a log's new owner opens the last ledger without recovery (BookKeeper's openLedgerNoRecovery), so the old owner is not fenced"
            }
            Bug::CacheServesPastLac => "a broker serves pulls from its cache past what is durable (entries not yet on Qa bookies)",
            Bug::BrokerAckBeforeQuorum => "a broker answers SEND_OK once the append is queued, before Qa bookies stored it",
            Bug::NameserverNeverExpires => "the NameServer never drops a broker that stopped registering",
            Bug::ConsumerCommitBeforeProcess => "a consumer commits the offset after what it pulled, before processing it",
            Bug::OffsetsInMemory => "a broker keeps consumer offsets only in memory; a takeover loses them",
            Bug::ProducerRetryNewId => "a producer retry of a send gets a new message id",
            Bug::IndexSkipsTakenOverLog => "a broker that opens a queue's log starts its key index at the log's end, so a query by key misses what was stored before",
            Bug::TxNoCheckback => "the broker's check-back service never runs, so a half whose end message was lost is never resolved",
            Bug::TxImmunityLosesHalf => "a check pass moves its check offset before the half it put again is durable, so a failed put loses the half (RocketMQ #544/#548)",
            Bug::TxDuplicateEndCommitsTwice => "end messages are not serialized per queue: two copies of one commit both find the half pending and write the real message twice (RocketMQ #5574)",
            Bug::TxEndAfterCheck => "an end message that arrives after a check-back resolved the half is applied again (RocketMQ #8158)",
            Bug::TxCheckOffsetStuck => "a failure in a check pass leaves the offsets and stops the queue's check-backs, so its halves are never checked again (RocketMQ #9500)",
            Bug::TxCheckByProducerClock => "a half's age is the broker's wall clock minus the producer's born timestamp, so clock skew makes check-backs early (RocketMQ #9640)",
            Bug::TxOpBeforeReal => "a commit writes the op record before the real message, so a failure between them loses a committed message",
            Bug::TxCheckUnbounded => "the check-back service ignores the maximum of checks and never discards a half",
            Bug::TxHalfVisible => "a half is stored in its real queue as well, so consumers see it before the producer commits",
            Bug::OrderedSkipOnFailure => "an ordered consumer counts a message whose processing failed as consumed and goes on to the next, instead of retrying it after 1 s",
            Bug::DlqBeforeMaxRetries => "a consumer counts the reconsume about to happen as done: a message goes to the dead-letter topic after one retry fewer than the group allows",
            Bug::LeaderActsAfterLosingLock => "the leader broker trusts its leadership once elected: paused or cut off past its session, it wakes and keeps assigning queues, writing blindly over a newer leader's assignments",
            Bug::RolloverOnOldBookies => "a log's owner keeps the bookie list it read when it opened the log and rolls over onto it, so bookies that join later never take the log's new data (a stale view of the bookies, as in BookKeeper #2490)",
            Bug::RebalanceOverlap => "a rebalance that takes a queue from a consumer does not stop it: it keeps pulling, processing and committing the queue while its new holder does too",
            Bug::OrderedLockOutlivesOwner => "a broker that opens a queue (a takeover or a restart) grants its lock at once, though a lease the earlier owner granted may still run at its consumer",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.iter().copied().find(|b| b.name() == name)
    }
}

/// The set of planted bugs switched on for one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bugs(u64);

impl Bugs {
    pub fn none() -> Bugs {
        Bugs(0)
    }

    pub fn with(self, bug: Bug) -> Bugs {
        Bugs(self.0 | 1 << bug as u64)
    }

    pub fn has(self, bug: Bug) -> bool {
        self.0 & (1 << bug as u64) != 0
    }

    /// The bugs switched on, in declaration order.
    pub fn list(self) -> Vec<Bug> {
        Bug::ALL.iter().copied().filter(|b| self.has(*b)).collect()
    }
}
