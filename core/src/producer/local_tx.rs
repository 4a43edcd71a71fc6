//! A producer's local transactions, on its own disk: the decision of each
//! (commit or rollback) survives a crash of the producer, and a check-back
//! from a broker is answered from it (unknown while it is undecided).
//!
//! The store is a log of records `(transaction, state)`; replaying it gives
//! each transaction's state. A decision, once durable, is final: a later
//! record that would change it is ignored, so a check-back and a late end
//! message can never see two answers.

use crate::env::{Disk, DiskError, Env};
use crate::wal::{Wal, WalError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

const LOG_NAME: &str = "local-tx.log";

/// A local transaction's state, as a check-back is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxState {
    /// Begun, not decided: a check-back is answered "unknown".
    Running,
    Commit,
    Rollback,
}

impl TxState {
    pub fn decided(self) -> bool {
        self != TxState::Running
    }
}

/// Each transaction's state after the records `log`, in order: the first
/// decision is final; records that cannot be read are errors.
pub fn replay(log: &[Vec<u8>]) -> Result<BTreeMap<String, TxState>, String> {
    let mut states = BTreeMap::new();
    for (i, bytes) in log.iter().enumerate() {
        let (tx, state): (String, TxState) =
            postcard::from_bytes(bytes).map_err(|e| format!("local transaction record {i}: {e}"))?;
        apply(&mut states, tx, state);
    }
    Ok(states)
}

/// One record: a decided transaction keeps its decision.
fn apply(states: &mut BTreeMap<String, TxState>, tx: String, state: TxState) {
    let now = states.entry(tx).or_insert(TxState::Running);
    if !now.decided() {
        *now = state;
    }
}

/// The store, open on a producer's disk.
pub struct LocalTx {
    disk: Arc<dyn Disk>,
    wal: Wal,
    states: BTreeMap<String, TxState>,
    /// A write failed and the log was not read again yet: its state is unknown.
    broken: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalTxError {
    #[error("local transaction log: {0}")]
    Wal(#[from] WalError),
    #[error("local transaction log: {0}")]
    Disk(#[from] DiskError),
    #[error("{0}")]
    Unreadable(String),
}

impl LocalTx {
    /// Opens (and recovers) the store on `env`'s disk.
    pub async fn open(env: &Env) -> Result<LocalTx, LocalTxError> {
        let (wal, recovered) = Wal::open(env.disk.clone(), LOG_NAME, 1).await?;
        for p in recovered.probes() {
            env.events.probe(p);
        }
        let states = replay(&recovered.records).map_err(LocalTxError::Unreadable)?;
        Ok(LocalTx { disk: env.disk.clone(), wal, states, broken: false })
    }

    /// Reads the log again from disk.
    async fn reopen(&mut self) -> Result<(), LocalTxError> {
        let (wal, recovered) = Wal::open(self.disk.clone(), LOG_NAME, 1).await?;
        self.states = replay(&recovered.records).map_err(LocalTxError::Unreadable)?;
        (self.wal, self.broken) = (wal, false);
        Ok(())
    }

    /// Records `state` for `tx` durably (begun, or decided), and returns the
    /// state it has now: a decided transaction keeps its first decision.
    pub async fn record(&mut self, tx: &str, state: TxState) -> Result<TxState, LocalTxError> {
        if self.broken {
            self.reopen().await?;
        }
        let bytes = postcard::to_allocvec(&(tx, state)).expect("a record always serializes");
        if let Err(e) = async {
            self.wal.append(&bytes)?;
            self.wal.sync().await
        }
        .await
        {
            // Nothing of a failed write may count: cut it, and read the log
            // again from disk, as the log's own state is unknown now.
            let _ = self.wal.rollback();
            self.broken = true;
            let _ = self.reopen().await;
            return Err(e.into());
        }
        apply(&mut self.states, tx.to_string(), state);
        Ok(self.states[tx])
    }

    /// The state of `tx`; `None` for a transaction this producer never began.
    pub fn state(&self, tx: &str) -> Option<TxState> {
        self.states.get(tx).copied()
    }

    /// Every transaction begun, with its state.
    pub fn states(&self) -> &BTreeMap<String, TxState> {
        &self.states
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(tx: &str, state: TxState) -> Vec<u8> {
        postcard::to_allocvec(&(tx, state)).unwrap()
    }

    #[test]
    fn a_decision_is_final() {
        let log = [
            record("a", TxState::Running),
            record("a", TxState::Commit),
            record("a", TxState::Rollback),
            record("b", TxState::Running),
        ];
        let states = replay(&log).unwrap();
        assert_eq!(states["a"], TxState::Commit);
        assert_eq!(states["b"], TxState::Running);
        assert!(replay(&[vec![0xff; 3]]).unwrap_err().starts_with("local transaction record 0"));
    }

    proptest! {
        /// Whatever records follow, every prefix of the log answers a decided
        /// transaction with its first decision.
        #[test]
        fn replay_keeps_the_first_decision(ops in prop::collection::vec((0u8..4, 0u8..3), 0..40)) {
            let states = [TxState::Running, TxState::Commit, TxState::Rollback];
            let log: Vec<Vec<u8>> = ops.iter().map(|(t, s)| record(&format!("t{t}"), states[*s as usize])).collect();
            for n in 0..=log.len() {
                let replayed = replay(&log[..n]).unwrap();
                for (tx, state) in &replayed {
                    let first = ops[..n]
                        .iter()
                        .filter(|(t, s)| format!("t{t}") == *tx && *s > 0)
                        .map(|(_, s)| states[*s as usize])
                        .next()
                        .unwrap_or(TxState::Running);
                    prop_assert_eq!(*state, first);
                }
            }
        }
    }
}
