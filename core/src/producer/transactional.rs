//! A transactional producer (RocketMQ's `TransactionMQProducer`): it sends a
//! half, runs the local transaction against its durable store, and sends the
//! end message one-way; its check listener answers check-backs from the
//! store (one-way too: an end message marked as the answer to a check); and
//! it heartbeats its group to the brokers of its routes, so check-backs can
//! find a live producer of the group.

use super::client::Producer;
use super::local_tx::{LocalTx, LocalTxError, TxState};
use super::proto::{Request as CheckRequest, TxCheck};
use crate::broker::proto::Request;
use crate::broker::txn::Resolution;
use crate::env::Env;
use crate::message::QueueId;
use crate::rpc::{self, Rpc};
use futures::lock::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// How often a producer tells the brokers of its routes that it lives.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Sees each check-back a producer answers.
pub trait CheckObserver: Send + Sync {
    fn checked(&self, from: &str, queue: &QueueId, half: u64, msg_id: &str, check: u32, answer: Resolution);
}

/// The producer's word for a transaction in state `state`. `None`: not in
/// this producer's store, so another producer of the group began it (a
/// transaction is begun durably before its half is sent): this one cannot
/// know, and says unknown, so the half waits for a check its own producer answers.
pub fn word(state: Option<TxState>) -> Resolution {
    match state {
        Some(TxState::Commit) => Resolution::Commit,
        Some(TxState::Rollback) => Resolution::Rollback,
        Some(TxState::Running) | None => Resolution::Unknown,
    }
}

#[derive(Clone)]
pub struct TxProducer {
    pub producer: Producer,
    group: String,
    store: Arc<Mutex<LocalTx>>,
}

impl TxProducer {
    /// Opens the local store and starts the check listener and the heartbeats to the brokers of `topic`.
    pub async fn start(
        env: &Env,
        nameservers: Vec<String>,
        group: &str,
        topic: &str,
        observer: Arc<dyn CheckObserver>,
    ) -> Result<TxProducer, LocalTxError> {
        let store = Arc::new(Mutex::new(LocalTx::open(env).await?));
        let producer = Producer::new(env, nameservers);
        let p = TxProducer { producer, group: group.to_string(), store };
        madsim::task::spawn(p.clone().listen(env.clone(), observer));
        madsim::task::spawn(p.clone().heartbeat(env.clone(), topic.to_string()));
        Ok(p)
    }

    /// Answers check-backs, each from the store as it is when the check arrives.
    async fn listen(self, env: Env, observer: Arc<dyn CheckObserver>) {
        let (_endpoint, mut requests) = Rpc::serve::<TxCheck>(&env);
        while let Some(inc) = rpc::next_request(&mut requests).await {
            let CheckRequest::Check { queue, half, msg_id, check } = inc.req;
            let answer = word(self.store.lock().await.state(&msg_id));
            observer.checked(&inc.from, &queue, half, &msg_id, check, answer);
            let end = Request::EndTx { queue, half, msg_id, word: answer, from_check: true };
            self.producer.notify(&inc.from, &end).await;
        }
    }

    async fn heartbeat(self, env: Env, topic: String) {
        let random = env.random("producer-heartbeat");
        loop {
            if let Some(routes) = self.producer.routes(&topic).await {
                let mut brokers: Vec<String> = routes.into_iter().map(|(b, _)| b).collect();
                brokers.sort();
                brokers.dedup();
                for b in brokers {
                    self.producer.notify(&b, &Request::Heartbeat { group: self.group.clone() }).await;
                }
            }
            env.sleep(random.jitter(HEARTBEAT_EVERY)).await;
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Records `state` for transaction `tx` durably; the state it has now
    /// (the first decision is final).
    pub async fn record(&self, tx: &str, state: TxState) -> Result<TxState, LocalTxError> {
        self.store.lock().await.record(tx, state).await
    }

    /// Every transaction in the store, with its state.
    pub async fn states(&self) -> Vec<(String, TxState)> {
        self.store.lock().await.states().iter().map(|(t, s)| (t.clone(), *s)).collect()
    }

    /// Sends the end message for the half at `half` of `queue` on `broker`, one-way.
    pub async fn end(&self, broker: &str, queue: &QueueId, half: u64, msg_id: &str, word: Resolution) {
        let req = Request::EndTx { queue: queue.clone(), half, msg_id: msg_id.to_string(), word, from_check: false };
        self.producer.notify(broker, &req).await;
    }
}
