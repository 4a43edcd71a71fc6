//! Durable cursors: a consumer group's position in a log, kept in the
//! metadata service (never only in memory) and only ever moved forward, by
//! compare-and-set, so a stale owner cannot move it back.

use super::MlError;
use crate::meta::{MetaClient, MetaError};

pub const CURSORS: &str = "/cursors";

pub fn path(log: &str, group: &str) -> String {
    format!("{CURSORS}/{log}/{group}")
}

/// Attempts before a commit gives up (each one lost a race or had no answer).
const ATTEMPTS: usize = 5;

fn decode(bytes: &[u8]) -> Result<u64, MlError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| MlError::Meta)?;
    Ok(u64::from_be_bytes(raw))
}

/// A cursor as last seen: its offset and its key's version (`None`: no key yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub offset: u64,
    pub version: Option<u64>,
}

/// The group's committed offset (the next one it will read); 0 if it never
/// committed.
pub async fn read(meta: &MetaClient, log: &str, group: &str) -> Result<u64, MlError> {
    read_versioned(meta, log, group).await.map(|k| k.offset)
}

pub async fn read_versioned(meta: &MetaClient, log: &str, group: &str) -> Result<Known, MlError> {
    match meta.get(&path(log, group)).await {
        Ok(Some((bytes, stat))) => Ok(Known { offset: decode(&bytes)?, version: Some(stat.version) }),
        Ok(None) => Ok(Known { offset: 0, version: None }),
        Err(_) => Err(MlError::Meta),
    }
}

/// Moves the cursor to `offset`, or leaves it where it is if it is there or
/// beyond already. Ok only once the offset (or a later one) is durable; the
/// cursor as it then is. `known`, the cursor as last seen, saves a read: a
/// stale one only costs a refused compare-and-set.
pub async fn commit(
    meta: &MetaClient,
    log: &str,
    group: &str,
    offset: u64,
    known: Option<Known>,
) -> Result<Known, MlError> {
    let key = path(log, group);
    let value = offset.to_be_bytes().to_vec();
    let mut known = known;
    for _ in 0..ATTEMPTS {
        let now = match known.take() {
            Some(k) => k,
            None => match read_versioned(meta, log, group).await {
                Ok(k) => k,
                Err(_) => continue,
            },
        };
        if now.offset >= offset {
            return Ok(now);
        }
        let written = match now.version {
            Some(v) => meta.set(&key, value.clone(), Some(v)).await.map(|stat| stat.version),
            None => meta.create(&key, value.clone(), None, false).await.map(|(_, stat)| stat.version),
        };
        match written {
            Ok(version) => return Ok(Known { offset, version: Some(version) }),
            // Someone moved it meanwhile, or the outcome is unknown: look again.
            Err(MetaError::BadVersion | MetaError::NodeExists | MetaError::Timeout) => continue,
            Err(_) => return Err(MlError::Meta),
        }
    }
    Err(MlError::Meta)
}
