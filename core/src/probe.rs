//! Coverage probes: named points in the protocol code where something rare and
//! important happens (DESIGN.md §9). A run counts the probes it reached; a
//! campaign reports which probes no seed reached, as holes in the workload or
//! the nemesis. One list here names them all, so `mqsim list` can show them
//! and a typo cannot make a probe that nobody reports.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! probes {
    ($($variant:ident = $name:literal : $about:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Probe {
            $($variant,)*
        }

        impl Probe {
            pub const ALL: &'static [Probe] = &[$(Probe::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Probe::$variant => $name,)*
                }
            }

            pub fn describe(self) -> &'static str {
                match self {
                    $(Probe::$variant => $about,)*
                }
            }
        }
    };
}

probes! {
    // Metadata service.
    MetaSessionExpired = "meta-session-expired": "the metadata service expired a session whose heartbeats stopped",
    MetaExpiryRolledBack = "meta-expiry-rolled-back": "a disk failure undid session expiries before they were durable",
    MetaWriteFailed = "meta-write-failed": "a log write or fsync failed; the service rebuilt itself from disk",
    MetaRefusesCorrupt = "meta-refuses-corrupt": "the service found damaged state and refuses to serve",
    MetaRecoveredSessions = "meta-recovered-sessions": "a restarted service gave recovered sessions a fresh timeout",
    MetaSequentialAfterRestart = "meta-sequential-after-restart": "a sequential create continued a counter recovered from the log",
    MetaStaleVersionRefused = "meta-stale-version-refused": "a compare-and-set or delete with a stale version was refused",
    MetaEphemeralOnDeadSession = "meta-ephemeral-on-dead-session": "an ephemeral create named a session that no longer lives",
    // The mirrored log.
    WalCopyRepaired = "wal-copy-repaired": "log recovery appended to one copy the records it lacked",
    WalTornTailCut = "wal-torn-tail-cut": "log recovery cut a torn, never-synced tail",
    WalDamagedCopyKept = "wal-damaged-copy-kept": "a copy ending in a damaged header was left alone; the other copy carried the log",
    WalDamageWasTransient = "wal-damage-was-transient": "damage seen on read was gone when the log was read again",
    // At-most-once RPC.
    RpcDuplicateDropped = "rpc-duplicate-dropped": "a duplicated call was recognised and not executed again",
    RpcCalleeRestarted = "rpc-callee-restarted": "a call reached a restarted callee and ended with an unknown outcome",
    RpcAnswerForPreviousIncarnation = "rpc-answer-for-previous-incarnation": "an answer to a call of the node's previous incarnation arrived after it restarted and was dropped",
    RpcLateAnswer = "rpc-late-answer": "an answer arrived after its call had given up",
    // Bookie.
    BookieFencedUnseenLedger = "bookie-fenced-unseen-ledger": "a bookie fenced a ledger it held no entry of",
    BookieRefusedFencedAdd = "bookie-refused-fenced-add": "a bookie refused a normal add to a fenced ledger",
    BookieRecoveryAddWhileFenced = "bookie-recovery-add-while-fenced": "a recovery add reached a bookie on which the ledger is fenced",
    BookieChecksumFailed = "bookie-checksum-failed": "a stored entry failed its checksum on read and was not served",
    BookieJournalLookedAgain = "bookie-journal-looked-again": "a journal that read as damaged was read again before being refused",
    BookieJournalFailed = "bookie-journal-failed": "a journal write or fsync failed; the bookie rolled back to its durable state",
    BookieReregistered = "bookie-reregistered": "a bookie's registration expired and it registered again",
    BookieRegistrationVanished = "bookie-registration-vanished": "a bookie's registration key vanished while its session lived (a late delete) and it registered again",
    BookieRemovedOldRegistration = "bookie-removed-old-registration": "a restarted bookie found its previous incarnation's key and removed it",
    // Ledger writer.
    WriterEnsembleChange = "writer-ensemble-change": "the writer replaced a failed bookie by compare-and-set",
    WriterMetadataRace = "writer-metadata-race": "an ensemble change found the metadata changed under it and merged",
    WriterDelayedWriteFailure = "writer-delayed-write-failure": "a write failed after its entry already had Qa copies; the bookie was still replaced",
    WriterFenced = "writer-fenced": "a bookie told the writer its ledger is fenced",
    WriterFoundInRecovery = "writer-found-in-recovery": "an ensemble change found the ledger IN_RECOVERY and stopped",
    WriterCloseLostRace = "writer-close-lost-race": "the writer's close found the ledger already closed or in recovery",
    WriterResentPending = "writer-resent-pending": "adds in flight were resent to a replacement bookie",
    // Recovery.
    RecoveryResumed = "recovery-resumed": "recovery started on a ledger already IN_RECOVERY (an earlier recovery died)",
    RecoveryFenceIncomplete = "recovery-fence-incomplete": "fencing could not reach quorum coverage; recovery gave up for now",
    RecoveryStartBelowLac = "recovery-start-below-lac": "recovery read from the last ensemble's first entry, below the reported LAC + 1",
    RecoveryBeyondLac = "recovery-beyond-lac": "recovery found and rewrote entries beyond the highest LAC reported",
    RecoveryEntryUnknown = "recovery-entry-unknown": "recovery could not tell whether an entry exists and aborted",
    RecoveryEnsembleChange = "recovery-ensemble-change": "a recovery rewrite replaced a bookie (written at close)",
    RecoveryClosedEmpty = "recovery-closed-empty": "recovery closed a ledger without any entry",
    RecoveryLostRace = "recovery-lost-race": "recovery's close found the ledger closed by someone else",
    // Auditor and replication.
    AuditorElected = "auditor-elected": "a bookie took the auditor lock",
    AuditorMarkedLostBookie = "auditor-marked-lost-bookie": "the auditor marked a ledger that names a lost bookie",
    AuditorFoundMissingCopy = "auditor-found-missing-copy": "the auditor found an entry missing on a live bookie of its write set",
    AuditorCheckUnanswered = "auditor-check-unanswered": "a copy check was not answered by every bookie and was not trusted",
    ReplicationCopiedFragment = "replication-copied-fragment": "a worker copied a fragment to a replacement bookie",
    ReplicationRecoveredOpenLedger = "replication-recovered-open-ledger": "a worker recovered an open ledger after its grace period",
    ReplicationLockReentered = "replication-lock-reentered": "a worker found a lock already held by its own session",
    ReplicationIncomplete = "replication-incomplete": "a re-check after repair failed; the ledger stays marked",
    // Managed ledgers.
    ManagedTakeoverOpenLedger = "managed-takeover-open-ledger": "a new owner took over a log whose last ledger was still open, and recovered it",
    ManagedOpenRaced = "managed-open-raced": "two owners opened a log at once; the loser's compare-and-set of the ledger list failed",
    ManagedRolledOver = "managed-rolled-over": "an owner closed its ledger and continued the log on a new one",
    ManagedCacheMiss = "managed-cache-miss": "a read missed the owner's entry cache and went to the bookies",
    ManagedLostOwnership = "managed-lost-ownership": "an owner's compare-and-set of the ledger list failed: another owner has the log",
    // Broker.
    BrokerTookOverQueue = "broker-took-over-queue": "a broker took over a queue another broker owned before (one it was not chosen for, left unowned; or one the leader moved to it)",
    KeyIndexReadFromLog = "key-index-read-from-log": "a query by key caught a queue's key index up by reading the log (a log the broker opened, not one it wrote all of)",
    // Transactions.
    TxCheckAnsweredCommit = "tx-check-answered-commit": "a check-back was answered commit and the broker committed the half",
    TxCheckAnsweredRollback = "tx-check-answered-rollback": "a check-back was answered rollback and the broker rolled the half back",
    TxCheckAnsweredUnknown = "tx-check-answered-unknown": "a check-back was answered unknown (the local transaction still ran)",
    TxEndAfterResolved = "tx-end-after-resolved": "an end message arrived for a half a check-back had resolved, and changed nothing",
    TxEndAfterDiscard = "tx-end-after-discard": "an end message or answer arrived for a half discarded after the maximum of checks",
    TxHalfDiscarded = "tx-half-discarded": "a half reached the maximum of checks and moved to the discard log",
    TxPassAfterTakeover = "tx-pass-after-takeover": "a check pass on a taken-over queue resumed from the stored check offset, past halves the last owner handled",
    TxCommitFinishedOpOnly = "tx-commit-finished-op-only": "a commit found its real message written (the op write lost to a crash) and wrote only the op record",
    TxNoLiveProducer = "tx-no-live-producer": "a check-back found no live producer of the group and waited for the next pass",
    TxCheckOtherProducer = "tx-check-other-producer": "a half's sender was silent, so its check-back went to another live producer of the group",
    // Ordered consumption.
    OrderedLockRefusedHeld = "ordered-lock-refused-held": "a consumer's lock of a queue was refused: another consumer of its group held it (a rebalance overlap the lock stopped)",
    OrderedLockRefusedOpened = "ordered-lock-refused-opened": "a lock was refused because the broker opened the queue lately and an earlier owner's lease may still run",
    OrderedLockRefusedStaleOwner = "ordered-lock-refused-stale-owner": "a broker whose session expired refused a lock of a queue it still had open",
    OrderedLeaseLapsed = "ordered-lease-lapsed": "a consumer's lease of a queue lapsed before it could renew it; it stopped and started the queue over",
    OrderedLockLostAtRenewal = "ordered-lock-lost-at-renewal": "a consumer's renewal of a lock was refused; it stopped consuming the queue",
    OrderedReconsume = "ordered-reconsume": "an ordered consumer retried a message whose processing failed, after 1 s, before anything after it",
    // NameServer.
    NameserverIgnoredOlderRegistration = "nameserver-ignored-older-registration": "a broker's registration arrived after a newer one and was ignored",
    NameserverExpiredBroker = "nameserver-expired-broker": "a NameServer dropped a broker whose registrations stopped",
    ProducerRetriedOtherBroker = "producer-retried-other-broker": "a failed send was retried on another broker with the same message id",
    ConsumerRebalanceUncommitted = "consumer-rebalance-uncommitted": "a rebalance took a queue away while offsets of it were uncommitted",
    ConsumerPulledFromFormerOwner = "consumer-pulled-from-former-owner": "a consumer pulled from a broker that no longer owned the queue",
    // The leader broker.
    LeaderAssignedNew = "leader-assigned-new": "the leader assigned a queue no broker was assigned",
    LeaderMovedOffDead = "leader-moved-off-dead": "the leader moved a queue off a broker whose load report was gone",
    LeaderShedLoad = "leader-shed-load": "the leader moved a queue from the busiest live broker to the idlest (a new broker takes load)",
    LeaderSteppedDown = "leader-stepped-down": "a leader read assignments a newer leader wrote and stepped down",
    LeaderLostRace = "leader-lost-race": "a leader's compare-and-set of the assignments failed: someone wrote them since it read them",
    LeaderQueueGivenUp = "leader-queue-given-up": "a broker gave up a queue the leader assigned to another broker",
    // Retry and dead-letter topics.
    RetrySentBack = "retry-sent-back": "a consumer sent a message it failed to process back to its group's retry topic",
    RetryDeadLettered = "retry-dead-lettered": "a message failed its last allowed reconsume and went to the group's dead-letter topic",
    RetrySendBackFailed = "retry-send-back-failed": "sending a failed message back failed or went unanswered; the consumer processes it again later",
    RetryNotDue = "retry-not-due": "a retried message reached a consumer before its delay was over; the consumer waited",
    SessionExpiredHoldingLock = "session-expired-holding-lock": "a session expired while its owner held a lock",
}

impl Probe {
    pub fn from_name(name: &str) -> Option<Probe> {
        Probe::ALL.iter().copied().find(|p| p.name() == name)
    }
}

impl Serialize for Probe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Probe, D::Error> {
        let name = String::deserialize(d)?;
        Probe::from_name(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown probe '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::Probe;

    #[test]
    fn names_are_unique_and_round_trip() {
        for (i, p) in Probe::ALL.iter().enumerate() {
            assert_eq!(Probe::from_name(p.name()), Some(*p));
            assert!(Probe::ALL[..i].iter().all(|q| q.name() != p.name()), "{} twice", p.name());
        }
        assert!(Probe::ALL.len() >= 30);
    }
}
