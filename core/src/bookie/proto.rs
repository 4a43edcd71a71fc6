//! What travels between ledger clients and bookies.

use serde::{Deserialize, Serialize};

/// Entry ids start at 0; `-1` means "no entry" (an empty LAC).
pub type EntryId = i64;
pub type LedgerId = u64;

/// An entry as the writer made it: the digest (CRC32C) covers every field, so
/// a bookie or reader can tell damage from data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub ledger: LedgerId,
    pub entry: EntryId,
    /// The writer's last add confirmed when it sent this entry.
    pub lac: EntryId,
    pub payload: Vec<u8>,
    pub digest: u32,
}

impl Entry {
    pub fn new(ledger: LedgerId, entry: EntryId, lac: EntryId, payload: Vec<u8>) -> Entry {
        let mut e = Entry { ledger, entry, lac, payload, digest: 0 };
        e.digest = e.compute_digest();
        e
    }

    fn compute_digest(&self) -> u32 {
        let mut c = crc32c::crc32c(&self.ledger.to_le_bytes());
        c = crc32c::crc32c_append(c, &self.entry.to_le_bytes());
        c = crc32c::crc32c_append(c, &self.lac.to_le_bytes());
        crc32c::crc32c_append(c, &self.payload)
    }

    pub fn intact(&self) -> bool {
        self.digest == self.compute_digest()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A normal add is refused once the ledger is fenced; a recovery add is not.
    Add { entry: Entry, recovery: bool },
    /// With `fence`, the ledger is fenced (durably) before the answer.
    Read { ledger: LedgerId, entry: EntryId, fence: bool },
    /// With `fence`, this is the fence request of recovery.
    ReadLac { ledger: LedgerId, fence: bool },
}

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Add { recovery: false, .. } => "Add",
            Request::Add { recovery: true, .. } => "RecoveryAdd",
            Request::Read { fence: false, .. } => "Read",
            Request::Read { fence: true, .. } => "RecoveryRead",
            Request::ReadLac { fence: false, .. } => "ReadLac",
            Request::ReadLac { fence: true, .. } => "Fence",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Added,
    Entry(Entry),
    Lac(EntryId),
    Error(BookieError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BookieError {
    #[error("ledger fenced")]
    Fenced,
    #[error("no such entry")]
    NoSuchEntry,
    /// The stored copy failed its checksum, or the disk failed: no data.
    #[error("storage fault")]
    Fault,
    /// The entry's digest did not match: refused.
    #[error("bad digest")]
    BadDigest,
}
