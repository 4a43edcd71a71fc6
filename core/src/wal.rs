//! A checksummed, optionally mirrored, append-only record log on a [`Disk`].
//!
//! Record layout: `len u32 | crc32c(len, seq) u32 | seq u64 | crc32c(payload) u32 | payload`,
//! where `seq` numbers records from 0. The header has its own checksum, so a
//! flipped length reads as damage, not as a torn tail; a record whose payload
//! is damaged is skipped by its (trusted) length.
//!
//! Each copy is parsed on its own and the copies are merged by sequence number,
//! so they need not line up byte for byte. Sync covers every copy before anyone
//! is answered, so every synced record is in every copy: a copy that parses to
//! its end (possibly a torn, never-synced tail) holds all of them. The log ends
//! at the first sequence number no copy has. It cannot be trusted (open fails)
//! when a later record exists, or when every copy ends in damage. Recovery cuts
//! only a copy's own torn tail and appends to every copy that parsed to its
//! end the records it lacks, so that the copies stay equivalent. It never
//! destroys anything on evidence a misread could fake: a copy that ends in a
//! damaged header is left alone, and the copies that parse carry the log.

use crate::env::{Disk, DiskError};
use crate::probe::Probe;
use std::collections::BTreeMap;
use std::sync::Arc;

const HEADER: u64 = 20;
/// Reads are retried this often before damage is believed: bit flips on read
/// are transient, flips at rest are not.
const READ_ATTEMPTS: usize = 3;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    #[error("record {seq} is damaged in every copy that could hold it")]
    Corrupt { seq: u64 },
}

/// What `open` found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<Vec<u8>>,
    /// Where each record starts in the first copy that holds it intact, for
    /// [`Wal::read`] (meaningful for single-copy logs).
    pub offsets: Vec<u64>,
    /// Record copies that were missing or damaged in some copy and were
    /// written to it again from another.
    pub repaired: u64,
    /// Torn, never-synced bytes cut from the ends of copies.
    pub dropped_tail_bytes: u64,
    /// Copies that end in a damaged header and were left alone.
    pub damaged_copies: u64,
    /// Reads of the log that found damage before one parsed (damage seen on
    /// read may be transient).
    pub damaged_reads: usize,
}

impl Recovered {
    /// The coverage probes this recovery reached.
    pub fn probes(&self) -> Vec<Probe> {
        [
            (self.repaired > 0, Probe::WalCopyRepaired),
            (self.dropped_tail_bytes > 0, Probe::WalTornTailCut),
            (self.damaged_copies > 0, Probe::WalDamagedCopyKept),
            (self.damaged_reads > 0, Probe::WalDamageWasTransient),
        ]
        .into_iter()
        .filter_map(|(reached, p)| reached.then_some(p))
        .collect()
    }
}

pub struct Wal {
    disk: Arc<dyn Disk>,
    files: Vec<String>,
    next_seq: u64,
    /// Per copy: current length and synced length.
    len: Vec<u64>,
    synced: Vec<u64>,
}

pub fn encode(seq: u64, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let seq = seq.to_le_bytes();
    let mut out = Vec::with_capacity(HEADER as usize + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c::crc32c_append(crc32c::crc32c(&len), &seq).to_le_bytes());
    out.extend_from_slice(&seq);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// One copy, parsed: its intact records and how it ends.
struct Copy {
    records: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Records whose frame is intact but whose payload reads as damaged: they
    /// exist, whatever a misread makes them look like.
    damaged: std::collections::BTreeSet<u64>,
    /// Where the torn tail starts (its length when there is none); `None` when
    /// a damaged header ends the copy.
    clean_end: Option<u64>,
}

fn parse_copy(buf: &[u8]) -> Copy {
    let mut copy = Copy { records: BTreeMap::new(), damaged: Default::default(), clean_end: None };
    let mut o = 0usize;
    loop {
        if buf.len() < o + HEADER as usize {
            copy.clean_end = Some(o as u64);
            return copy;
        }
        let word = |i: usize| u32::from_le_bytes(buf[o + i..o + i + 4].try_into().expect("4 bytes"));
        if crc32c::crc32c(&[&buf[o..o + 4], &buf[o + 8..o + 16]].concat()) != word(4) {
            return copy; // a damaged header: where the next record starts is unknown
        }
        let len = word(0) as usize;
        let seq = u64::from_le_bytes(buf[o + 8..o + 16].try_into().expect("8 bytes"));
        let start = o + HEADER as usize;
        if buf.len() < start + len {
            copy.clean_end = Some(o as u64);
            return copy;
        }
        if crc32c::crc32c(&buf[start..start + len]) == word(16) {
            copy.records.insert(seq, (o as u64, buf[start..start + len].to_vec()));
        } else {
            copy.damaged.insert(seq);
        }
        o = start + len;
    }
}

/// Recovers the records of a log from the bytes of its copies (see the module doc).
pub fn parse(bufs: &[Vec<u8>]) -> Result<Recovered, WalError> {
    merge(&bufs.iter().map(|b| parse_copy(b)).collect::<Vec<_>>())
}

/// Merges parsed copies by sequence number.
fn merge(copies: &[Copy]) -> Result<Recovered, WalError> {
    let mut rec = Recovered::default();
    let mut seq = 0;
    while let Some((offset, payload)) = copies.iter().find_map(|c| c.records.get(&seq)) {
        rec.records.push(payload.clone());
        rec.offsets.push(*offset);
        seq += 1;
    }
    // A record some copy holds damaged, and none intact, is a record of the
    // log all the same: ending the log before it would reuse its number.
    let beyond = copies.iter().any(|c| c.records.range(seq..).next().is_some() || c.damaged.contains(&seq));
    if beyond || copies.iter().all(|c| c.clean_end.is_none()) {
        return Err(WalError::Corrupt { seq });
    }
    Ok(rec)
}

impl Wal {
    /// Opens (or creates) the log `name` kept in `copies` files, recovering
    /// every intact record, cutting off torn tails, and giving every copy
    /// every recovered record again (so one later flip at rest is survivable).
    pub async fn open(disk: Arc<dyn Disk>, name: &str, copies: usize) -> Result<(Wal, Recovered), WalError> {
        let files: Vec<String> = (0..copies).map(|i| format!("{name}.{i}")).collect();
        let (mut attempt, mut damaged_reads) = (0, 0);
        let (parsed, mut recovered) = loop {
            attempt += 1;
            let attempt_result = files
                .iter()
                .map(|f| disk.read(f, 0, disk.len(f)).map(|b| parse_copy(&b)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(WalError::from)
                .and_then(|parsed| Ok((merge(&parsed)?, parsed)));
            match attempt_result {
                Ok((rec, parsed)) => break (parsed, Recovered { damaged_reads, ..rec }),
                Err(e) if attempt >= READ_ATTEMPTS => return Err(e),
                Err(WalError::Corrupt { .. }) => damaged_reads += 1,
                Err(_) => {}
            }
        };
        // Nothing is ever destroyed on evidence a misread could fake: a copy
        // that ends in damage is left as it is (the intact copies carry the
        // log); a copy that parsed to its end loses only its torn tail and gets
        // the records it lacks appended, synced before the next copy is touched.
        for (f, copy) in files.iter().zip(&parsed) {
            let Some(end) = copy.clean_end else {
                recovered.damaged_copies += 1;
                continue;
            };
            let now = disk.len(f);
            if end < now {
                disk.truncate(f, end)?;
                recovered.dropped_tail_bytes += now - end;
            }
            let missing: Vec<usize> =
                (0..recovered.records.len()).filter(|s| !copy.records.contains_key(&(*s as u64))).collect();
            if missing.is_empty() {
                continue;
            }
            for &s in &missing {
                disk.append(f, &encode(s as u64, &recovered.records[s]))?;
            }
            recovered.repaired += missing.len() as u64;
            disk.sync(f).await?;
        }
        let len: Vec<u64> = files.iter().map(|f| disk.len(f)).collect();
        let next_seq = recovered.records.len() as u64;
        Ok((Wal { disk, files, next_seq, synced: len.clone(), len }, recovered))
    }

    /// Appends one record to every copy; volatile until [`Wal::sync`].
    /// Returns where the record starts in the first copy.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, DiskError> {
        let bytes = encode(self.next_seq, payload);
        for (f, len) in self.files.iter().zip(&mut self.len) {
            self.disk.append(f, &bytes)?;
            *len += bytes.len() as u64;
        }
        self.next_seq += 1;
        Ok(self.len[0] - bytes.len() as u64)
    }

    /// Reads the record at `offset` of the first copy, checking it.
    pub fn read(&self, offset: u64) -> Result<Vec<u8>, WalError> {
        let f = &self.files[0];
        let header = self.disk.read(f, offset, HEADER)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
        let buf = self.disk.read(f, offset, HEADER + len.min(self.len[0].saturating_sub(offset + HEADER)))?;
        let copy = parse_copy(&buf);
        copy.records.into_values().next().map(|(_, p)| p).ok_or(WalError::Corrupt { seq: u64::MAX })
    }

    pub async fn sync(&mut self) -> Result<(), DiskError> {
        for f in &self.files {
            self.disk.sync(f).await?;
        }
        self.synced.clone_from(&self.len);
        Ok(())
    }

    pub fn has_unsynced(&self) -> bool {
        self.len != self.synced
    }

    /// Cuts every copy back to what was last synced (after a failed write or
    /// sync); the caller then recovers from disk.
    pub fn rollback(&mut self) -> Result<(), DiskError> {
        for ((f, len), synced) in self.files.iter().zip(&mut self.len).zip(&self.synced) {
            if self.disk.len(f) > *synced {
                self.disk.truncate(f, *synced)?;
            }
            *len = *synced;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(payloads: &[&[u8]]) -> Vec<u8> {
        payloads.iter().enumerate().flat_map(|(seq, p)| encode(seq as u64, p)).collect()
    }

    /// Found by `ledger-fencing` seed 858: a flip on read in the last record's
    /// payload made it look absent, recovery ended the log before it, and the
    /// next append reused its sequence number, so the acknowledged record was
    /// lost for good.
    #[test]
    fn a_damaged_last_record_is_not_taken_for_the_end_of_the_log() {
        let mut one = log(&[b"first", b"second", b"last"]);
        let end = one.len();
        one[end - 1] ^= 0x10;
        assert_eq!(parse(&[one.clone()]).err(), Some(WalError::Corrupt { seq: 2 }));
        // Another copy holding it intact carries the log.
        let intact = log(&[b"first", b"second", b"last"]);
        assert_eq!(parse(&[one, intact]).unwrap().records.len(), 3);
    }

    #[test]
    fn a_torn_last_record_is_cut_off() {
        let mut torn = log(&[b"first", b"second", b"last"]);
        torn.truncate(torn.len() - 2);
        let found = parse(&[torn]).unwrap();
        assert_eq!(found.records, vec![b"first".to_vec(), b"second".to_vec()]);
    }
}
