//! What travels between ledger clients and bookies.

use crate::env::Kind;
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
    /// The entries `first..=last` of `ledger` this bookie holds intact, in
    /// one answer (BookKeeper's batch read); damaged copies are left out.
    ReadBatch { ledger: LedgerId, first: EntryId, last: EntryId },
    /// Which entries of `ledger` this bookie holds intact (BookKeeper's
    /// "list of entries of a ledger", which its auditor checks replicas with).
    ListEntries { ledger: LedgerId },
}

/// The bookie protocol's kinds of message, for fault rules.
pub mod kind {
    use crate::env::Kind;
    pub const ADD: Kind = Kind::new("Add");
    pub const RECOVERY_ADD: Kind = Kind::new("RecoveryAdd");
    pub const READ: Kind = Kind::new("Read");
    pub const RECOVERY_READ: Kind = Kind::new("RecoveryRead");
    pub const READ_LAC: Kind = Kind::new("ReadLac");
    pub const FENCE: Kind = Kind::new("Fence");
    pub const LIST_ENTRIES: Kind = Kind::new("ListEntries");
    pub const READ_BATCH: Kind = Kind::new("ReadBatch");
}

pub const KINDS: &[Kind] = &[
    kind::ADD,
    kind::RECOVERY_ADD,
    kind::READ,
    kind::RECOVERY_READ,
    kind::READ_LAC,
    kind::FENCE,
    kind::LIST_ENTRIES,
    kind::READ_BATCH,
];

impl Request {
    pub fn kind(&self) -> Kind {
        match self {
            Request::Add { recovery: false, .. } => kind::ADD,
            Request::Add { recovery: true, .. } => kind::RECOVERY_ADD,
            Request::Read { fence: false, .. } => kind::READ,
            Request::Read { fence: true, .. } => kind::RECOVERY_READ,
            Request::ReadLac { fence: false, .. } => kind::READ_LAC,
            Request::ReadLac { fence: true, .. } => kind::FENCE,
            Request::ListEntries { .. } => kind::LIST_ENTRIES,
            Request::ReadBatch { .. } => kind::READ_BATCH,
        }
    }
}

/// The bookie, as a protocol a node serves.
pub struct Bookie;

impl crate::rpc::Protocol for Bookie {
    const SERVICE: u8 = 2;
    const NAME: &'static str = "bookie";
    type Request = Request;
    type Response = Response;
    fn kind(req: &Request) -> Kind {
        req.kind()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Added,
    Entry(Entry),
    Lac(EntryId),
    Entries(Vec<EntryId>),
    Batch(Vec<Entry>),
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
