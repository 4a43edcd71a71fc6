//! The broker's transactions, a thin driver around [`super::txn`]: per queue,
//! the half, op and discard logs (managed ledgers, never served to
//! consumers); halves, end messages and check-back answers; the check-back
//! service's passes; and the live producers of each group, from heartbeats.

use super::txn::{self, CheckConfig, EndAction, Half, HalfFate, Op, Resolution, Step};
use crate::bugs::Bug;
use crate::env::Env;
use crate::ledger::LedgerClient;
use crate::managed::{self, ManagedLedger, MlError};
use crate::message::{Message, QueueId};
use crate::probe::Probe;
use crate::producer::proto::{Request as CheckRequest, TxCheck};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cursor, in the half and op logs, of the check-back service.
pub const CHECK_CURSOR: &str = "%check%";
/// A producer unheard of for this long is not asked to check back.
pub const PRODUCER_EXPIRY: Duration = Duration::from_secs(15);

pub fn half_log(queue_log: &str) -> String {
    format!("{queue_log}-half")
}

pub fn op_log(queue_log: &str) -> String {
    format!("{queue_log}-op")
}

pub fn discard_log(queue_log: &str) -> String {
    format!("{queue_log}-discard")
}

/// An entry of the half log (and of the discard log, where a half goes after the maximum of checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfRecord {
    /// The offset of the half's first copy; `None` in the first copy itself.
    pub origin: Option<u64>,
    pub group: String,
    /// The producer that sent the half.
    pub producer: String,
    pub message: Message,
    /// The storing broker's wall clock when the first copy was stored: for
    /// people reading the log only; a half's age is never taken from a
    /// stored timestamp (another broker's clock), see [`check_pass`].
    pub stored_ms: u64,
    /// The producer's wall clock when it sent the half.
    pub born_ms: u64,
    /// Check-backs sent for the half before this copy was put.
    pub checks: u32,
}

impl HalfRecord {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a half always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<HalfRecord> {
        match postcard::take_from_bytes::<HalfRecord>(bytes) {
            Ok((h, [])) => Some(h),
            _ => None,
        }
    }
}

/// An op record: the payload is the origin of the half it resolves.
pub fn encode_op(origin: u64) -> Vec<u8> {
    postcard::to_allocvec(&origin).expect("an offset always serializes")
}

pub fn decode_op(bytes: &[u8]) -> Option<u64> {
    match postcard::take_from_bytes::<u64>(bytes) {
        Ok((o, [])) => Some(o),
        _ => None,
    }
}

/// A queue's transaction logs, as its owner holds them.
pub struct TxLogs {
    pub half: ManagedLedger,
    pub op: ManagedLedger,
    pub discard: ManagedLedger,
    /// Serializes end messages and check passes of the queue: each decides
    /// from what the logs hold, and must see what the one before it wrote.
    /// Storing a new half needs no turn: it lands past every end a pass reads.
    turn: futures::lock::Mutex<()>,
    book: Arc<Mutex<Book>>,
}

/// What the owner knows of its halves beyond the logs' cursors.
struct Book {
    /// Origins named by an op record.
    resolved: BTreeSet<u64>,
    /// Origins moved to the discard log.
    discarded: BTreeSet<u64>,
    /// The end of the half log when this owner opened it: halves below were stored by earlier owners.
    opened_end: u64,
    /// This owner's monotonic clock when it opened the logs, in ms.
    opened_ms: u64,
    /// This owner's monotonic clock when it stored each first copy, in ms.
    stored_ms: BTreeMap<u64, u64>,
    /// The check service stopped for good (the planted bug `tx-check-offset-stuck`).
    stopped: bool,
}

/// Reads every entry of `ml` below its durable end.
async fn read_all<T>(ml: &ManagedLedger, decode: impl Fn(&[u8]) -> Option<T>) -> Result<Vec<T>, MlError> {
    read_range(ml, 0, ml.end(), decode).await
}

async fn read_range<T>(
    ml: &ManagedLedger,
    from: u64,
    to: u64,
    decode: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>, MlError> {
    let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
    for offset in from..to {
        out.push(decode(&ml.read(offset).await?).ok_or(MlError::Unreadable)?);
    }
    Ok(out)
}

impl TxLogs {
    /// Opens the transaction logs of the queue whose log is `queue_log`, as
    /// its new owner, and reads which halves are resolved or discarded.
    pub async fn open(
        env: &Env,
        c: &LedgerClient,
        queue_log: &str,
        config: managed::Config,
    ) -> Result<TxLogs, MlError> {
        let half = ManagedLedger::open(c, &half_log(queue_log), config).await?;
        let op = ManagedLedger::open(c, &op_log(queue_log), config).await?;
        let discard = ManagedLedger::open(c, &discard_log(queue_log), config).await?;
        let resolved = read_all(&op, decode_op).await?.into_iter().collect();
        let discarded =
            read_all(&discard, HalfRecord::decode).await?.into_iter().map(|h| h.origin.unwrap_or(0)).collect();
        let book = Book {
            resolved,
            discarded,
            opened_end: half.end(),
            opened_ms: mono_ms(env),
            stored_ms: BTreeMap::new(),
            stopped: false,
        };
        Ok(TxLogs { half, op, discard, turn: futures::lock::Mutex::new(()), book: Arc::new(Mutex::new(book)) })
    }

    /// Why the logs take no more writes, if they do not.
    pub fn failed(&self) -> Option<MlError> {
        self.half.failed().or_else(|| self.op.failed()).or_else(|| self.discard.failed())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("tx book")
    }

    /// Stores a half; its offset once durable.
    pub async fn store_half(
        &self,
        env: &Env,
        group: &str,
        producer: &str,
        message: &Message,
        born_ms: u64,
    ) -> Result<u64, MlError> {
        let record = HalfRecord {
            origin: None,
            group: group.to_string(),
            producer: producer.to_string(),
            message: message.clone(),
            stored_ms: env.clock.wall_ms(),
            born_ms,
            checks: 0,
        };
        // Its time is noted as it is queued: a pass may see it durable
        // before this task runs again.
        let (book, now) = (self.book.clone(), mono_ms(env));
        let (done_tx, done_rx) = futures::channel::oneshot::channel();
        self.half.append_queued(
            record.encode(),
            move |offset| {
                book.lock().expect("tx book").stored_ms.insert(offset, now);
            },
            move |r| {
                let _ = done_tx.send(r);
            },
        );
        done_rx.await.unwrap_or(Err(MlError::Fenced))
    }

    /// The fate of the half whose first copy is at `origin`, for an end
    /// message about `msg_id`; `written` tells whether its real message is
    /// in the real queue already.
    async fn fate(
        &self,
        origin: u64,
        msg_id: &str,
        written: impl std::future::Future<Output = Result<bool, MlError>>,
    ) -> Result<(HalfFate, Option<HalfRecord>), MlError> {
        {
            let book = self.book();
            if book.resolved.contains(&origin) {
                return Ok((HalfFate::Resolved, None));
            }
            if book.discarded.contains(&origin) {
                return Ok((HalfFate::Discarded, None));
            }
        }
        if origin >= self.half.end() {
            return Ok((HalfFate::Unknown, None));
        }
        let record = HalfRecord::decode(&self.half.read(origin).await?).ok_or(MlError::Unreadable)?;
        if record.origin.is_some() || record.message.msg_id != msg_id {
            return Ok((HalfFate::Unknown, None));
        }
        Ok((HalfFate::Pending { real_written: written.await? }, Some(record)))
    }
}

fn mono_ms(env: &Env) -> u64 {
    env.clock.mono().as_millis() as u64
}

/// Writes a real message to its queue; the offset once durable.
pub type WriteReal<'a> = &'a (dyn Fn(Message) -> futures::future::BoxFuture<'static, Result<u64, MlError>> + Sync);
/// Whether a message of this id is in the real queue already.
pub type IsWritten<'a> = &'a (dyn Fn(String) -> futures::future::BoxFuture<'static, Result<bool, MlError>> + Sync);

/// A producer's word about a half: an end message, or the answer to a check-back.
#[derive(Clone, Copy, Debug)]
pub struct EndMessage<'a> {
    /// Where the half's first copy is.
    pub origin: u64,
    pub msg_id: &'a str,
    pub word: Resolution,
    pub from_check: bool,
}

/// Handles an end message: commit writes the real message, then the op
/// record; rollback writes the op record; otherwise nothing (T8).
pub async fn end(
    env: &Env,
    tx: &TxLogs,
    m: EndMessage<'_>,
    write_real: WriteReal<'_>,
    is_written: IsWritten<'_>,
) -> Result<(), MlError> {
    let EndMessage { origin, msg_id, word, from_check } = m;
    // The planted bug lets copies of one end message decide side by side.
    let _turn = if env.bug(Bug::TxDuplicateEndCommitsTwice) { None } else { Some(tx.turn.lock().await) };
    let (mut fate, record) = tx.fate(origin, msg_id, is_written(msg_id.to_string())).await?;
    if from_check {
        env.probe(match word {
            Resolution::Commit => Probe::TxCheckAnsweredCommit,
            Resolution::Rollback => Probe::TxCheckAnsweredRollback,
            Resolution::Unknown => Probe::TxCheckAnsweredUnknown,
        });
    }
    let record = match (fate, record) {
        (HalfFate::Pending { .. }, Some(r)) => Some(r),
        // The planted bug applies an end message whatever resolved the half before.
        (HalfFate::Resolved, _) if env.bug(Bug::TxEndAfterCheck) && !from_check => {
            let r = HalfRecord::decode(&tx.half.read(origin).await?).ok_or(MlError::Unreadable)?;
            fate = HalfFate::Pending { real_written: false };
            Some(r)
        }
        _ => None,
    };
    match fate {
        HalfFate::Resolved => env.probe(Probe::TxEndAfterResolved),
        HalfFate::Discarded => env.probe(Probe::TxEndAfterDiscard),
        _ => {}
    }
    let action = txn::on_end(fate, word);
    let op = || async {
        tx.op.append(encode_op(origin)).await?;
        tx.book().resolved.insert(origin);
        Ok::<(), MlError>(())
    };
    match action {
        EndAction::Nothing(why) => {
            tracing::debug!(origin, msg_id, ?word, "end changes nothing: {why}");
            Ok(())
        }
        EndAction::OpOnly => {
            if word == Resolution::Commit {
                env.probe(Probe::TxCommitFinishedOpOnly);
            }
            op().await
        }
        EndAction::RealThenOp => {
            let message = record.expect("a pending half has its record").message;
            if env.bug(Bug::TxOpBeforeReal) {
                op().await?;
                write_real(message).await.map(|_| ())
            } else {
                write_real(message).await?;
                op().await
            }
        }
    }
}

/// Who a broker heard from: each group's producers and when (monotonic ms).
#[derive(Default)]
pub struct Producers {
    heard: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per group, how many check-backs went out: the next goes to the next live producer.
    turns: BTreeMap<String, usize>,
}

impl Producers {
    pub fn heard(&mut self, group: &str, producer: &str, now_ms: u64) {
        self.heard.entry(group.to_string()).or_default().insert(producer.to_string(), now_ms);
    }

    /// The producer to ask about a half `sender` sent: the sender while it
    /// lives (its store knows the transaction), else the live producer of
    /// `group` whose turn it is, round robin.
    pub fn pick(&mut self, group: &str, sender: &str, now_ms: u64) -> Option<String> {
        let expiry = PRODUCER_EXPIRY.as_millis() as u64;
        let heard = self.heard.get(group)?;
        if heard.get(sender).is_some_and(|at| now_ms.saturating_sub(*at) <= expiry) {
            return Some(sender.to_string());
        }
        let live: Vec<&String> =
            heard.iter().filter(|(_, at)| now_ms.saturating_sub(**at) <= expiry).map(|(p, _)| p).collect();
        if live.is_empty() {
            return None;
        }
        let turn = self.turns.entry(group.to_string()).or_default();
        *turn += 1;
        Some(live[*turn % live.len()].clone())
    }
}

/// One check pass over `queue`'s transaction logs: reads the halves from the
/// durable check offset and the op records from the durable op offset, lets
/// [`txn::pass`] decide, carries its steps out, and stores the new offsets.
/// `pick` names the producer of a group to ask about a half a producer sent;
/// `is_written` tells whether a message id's real message is stored already.
pub async fn check_pass(
    env: &Env,
    cfg: &CheckConfig,
    queue: &QueueId,
    tx: &TxLogs,
    pick: &(dyn Fn(&str, &str) -> Option<String> + Sync),
    is_written: IsWritten<'_>,
) -> Result<(), MlError> {
    if tx.book().stopped {
        return Ok(());
    }
    let result = pass_once(env, cfg, queue, tx, pick, is_written).await;
    if result.is_err() && env.bug(Bug::TxCheckOffsetStuck) {
        tx.book().stopped = true;
    }
    result
}

async fn pass_once(
    env: &Env,
    cfg: &CheckConfig,
    queue: &QueueId,
    tx: &TxLogs,
    pick: &(dyn Fn(&str, &str) -> Option<String> + Sync),
    is_written: IsWritten<'_>,
) -> Result<(), MlError> {
    let _turn = tx.turn.lock().await;
    let check_offset = tx.half.read_cursor(CHECK_CURSOR).await?;
    let op_offset = tx.op.read_cursor(CHECK_CURSOR).await?;
    let (half_end, op_end) = (tx.half.end(), tx.op.end());
    let records = read_range(&tx.half, check_offset, half_end, HalfRecord::decode).await?;
    let ops: Vec<Op> = read_range(&tx.op, op_offset, op_end, decode_op)
        .await?
        .into_iter()
        .zip(op_offset..)
        .map(|(origin, offset)| Op { offset, origin })
        .collect();
    let by_producer_clock = env.bug(Bug::TxCheckByProducerClock);
    // A half's age by this broker's monotonic clock: a half an earlier owner
    // stored is at least as old as this ownership (another broker's clock
    // cannot be compared with this one's).
    let (now_ms, halves) = {
        let book = tx.book();
        if check_offset < book.opened_end && !records.is_empty() && book.opened_end > 0 {
            env.probe(Probe::TxPassAfterTakeover);
        }
        let now = if by_producer_clock { env.clock.wall_ms() } else { mono_ms(env) };
        let halves: Vec<Half> = records
            .iter()
            .zip(check_offset..)
            .map(|(r, offset)| {
                let origin = r.origin.unwrap_or(offset);
                let stored_ms = if by_producer_clock {
                    r.born_ms
                } else if origin < book.opened_end {
                    book.opened_ms
                } else {
                    // Not noted (cannot be, but if it were): taken as stored now.
                    book.stored_ms.get(&origin).copied().unwrap_or(now)
                };
                Half { offset, origin, stored_ms, born_ms: r.born_ms, checks: r.checks }
            })
            .collect();
        (now, halves)
    };
    let cfg = if env.bug(Bug::TxCheckUnbounded) { CheckConfig { max_checks: u32::MAX, ..*cfg } } else { *cfg };
    let p = txn::pass(&cfg, now_ms, check_offset, &halves, op_offset, &ops);
    for step in &p.steps {
        match step {
            Step::Check(h) => {
                let record = &records[(h.offset - check_offset) as usize];
                // A check no producer can be asked does not count: the half is
                // put again as it is (a new owner hears of the group's producers
                // within a heartbeat or a route refresh).
                let producer = pick(&record.group, &record.producer);
                let checks = if producer.is_some() { h.checks + 1 } else { h.checks };
                let again = HalfRecord { origin: Some(h.origin), checks, ..record.clone() };
                if env.bug(Bug::TxImmunityLosesHalf) {
                    tx.half.append_then(again.encode(), |_| {});
                } else {
                    tx.half.append(again.encode()).await?;
                }
                let Some(producer) = producer else {
                    env.probe(Probe::TxNoLiveProducer);
                    continue;
                };
                if producer != record.producer {
                    env.probe(Probe::TxCheckOtherProducer);
                }
                let req = CheckRequest::Check {
                    queue: queue.clone(),
                    half: h.origin,
                    msg_id: record.message.msg_id.clone(),
                    check: checks,
                };
                env.rpc().notify::<TxCheck>(&producer, &req).await;
            }
            Step::Discard(h) => {
                let record = &records[(h.offset - check_offset) as usize];
                // A commit a crash cut short between its two writes is
                // finished, not discarded: its real message is delivered.
                if is_written(record.message.msg_id.clone()).await? {
                    env.probe(Probe::TxCommitFinishedOpOnly);
                    tx.op.append(encode_op(h.origin)).await?;
                    tx.book().resolved.insert(h.origin);
                    continue;
                }
                let moved = HalfRecord { origin: Some(h.origin), ..record.clone() };
                tx.discard.append(moved.encode()).await?;
                tx.book().discarded.insert(h.origin);
                env.probe(Probe::TxHalfDiscarded);
            }
        }
    }
    tx.half.commit_cursor(CHECK_CURSOR, p.check_offset).await?;
    tx.op.commit_cursor(CHECK_CURSOR, p.op_offset).await?;
    Ok(())
}

/// The interval between a queue's check passes, by the broker's clock.
pub fn interval(cfg: &CheckConfig) -> Duration {
    Duration::from_millis(cfg.interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_goes_to_the_sender_while_it_lives_then_round_robin_to_the_live() {
        let mut p = Producers::default();
        assert_eq!(p.pick("g", "p0", 0), None, "no producer heard of");
        p.heard("g", "p0", 0);
        p.heard("g", "p1", 0);
        p.heard("g", "p2", 10_000);
        assert_eq!(p.pick("g", "p0", 5_000), Some("p0".into()));
        // p0 and p1 silent for longer than the expiry: p2 answers every time.
        let later = 10_000 + PRODUCER_EXPIRY.as_millis() as u64 - 1;
        assert_eq!(p.pick("g", "p0", later), Some("p2".into()));
        p.heard("g", "p1", later);
        let picks: BTreeSet<String> = (0..4).filter_map(|_| p.pick("g", "p0", later)).collect();
        assert_eq!(picks, BTreeSet::from(["p1".to_string(), "p2".to_string()]), "round robin over the live");
        assert_eq!(p.pick("g", "p0", later + PRODUCER_EXPIRY.as_millis() as u64 + 1), None);
        assert_eq!(p.pick("other", "p0", 0), None);
    }

    #[test]
    fn records_round_trip_and_garbage_does_not_decode() {
        let m = Message {
            msg_id: "m".into(),
            topic: "t".into(),
            tag: "a".into(),
            keys: vec![],
            body: vec![1],
            redelivery: None,
        };
        let h = HalfRecord {
            origin: Some(3),
            group: "g".into(),
            producer: "p".into(),
            message: m,
            stored_ms: 5,
            born_ms: 4,
            checks: 2,
        };
        assert_eq!(HalfRecord::decode(&h.encode()), Some(h.clone()));
        assert_eq!(HalfRecord::decode(&h.encode()[1..]), None);
        assert_eq!(decode_op(&encode_op(77)), Some(77));
        assert_eq!(decode_op(&[0x80]), None);
    }
}
