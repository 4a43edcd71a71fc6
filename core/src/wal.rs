//! A checksummed, optionally mirrored, append-only record log on a [`Disk`].
//!
//! Record layout: `len u32 | crc32c(len) u32 | crc32c(payload) u32 | payload`.
//! The header has its own checksum so that a flipped length reads as corruption
//! rather than as a torn tail. With several copies, each record is taken from
//! the first copy where it is intact; a record that is incomplete in some copy
//! was never synced (sync covers every copy before anyone is answered), so the
//! log ends there. A record damaged in every copy cannot be trusted: open fails.
//! After recovery every copy is rewritten to the recovered content and synced,
//! so the copies stay aligned and a copy damaged at rest is repaired.

use crate::env::{Disk, DiskError};
use std::sync::Arc;

const HEADER: u64 = 12;
/// Reads are retried this often before damage is believed: bit flips on read
/// are transient, flips at rest are not.
const READ_ATTEMPTS: usize = 3;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    #[error("record at offset {offset} is damaged in every copy")]
    Corrupt { offset: u64 },
}

/// What `open` found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<Vec<u8>>,
    /// Where each record starts, for [`Wal::read`].
    pub offsets: Vec<u64>,
    /// The recovered log, byte for byte, as every copy must hold it.
    bytes: Vec<u8>,
    /// Damaged record copies, rebuilt from an intact copy.
    pub repaired: u64,
    /// Unsynced bytes past the last whole record, removed.
    pub dropped_tail_bytes: u64,
}

pub struct Wal {
    disk: Arc<dyn Disk>,
    files: Vec<String>,
    end: u64,
    synced: u64,
}

pub fn encode(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(HEADER as usize + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

enum At {
    Valid(u64),
    Incomplete,
    Damaged,
}

fn record_at(buf: &[u8], offset: u64) -> At {
    let o = offset as usize;
    if buf.len() < o + HEADER as usize {
        return At::Incomplete;
    }
    let word = |i: usize| u32::from_le_bytes(buf[o + i..o + i + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[o..o + 4]) != word(4) {
        return At::Damaged;
    }
    let len = word(0) as usize;
    let start = o + HEADER as usize;
    if buf.len() < start + len {
        return At::Incomplete;
    }
    if crc32c::crc32c(&buf[start..start + len]) != word(8) {
        return At::Damaged;
    }
    At::Valid(len as u64)
}

impl Wal {
    /// Opens (or creates) the log `name` kept in `copies` files, recovering
    /// every intact record and cutting off an unsynced tail.
    pub async fn open(disk: Arc<dyn Disk>, name: &str, copies: usize) -> Result<(Wal, Recovered), WalError> {
        let files: Vec<String> = (0..copies).map(|i| format!("{name}.{i}")).collect();
        let mut attempt = 0;
        let (recovered, bufs) = loop {
            attempt += 1;
            match Self::scan(&*disk, &files) {
                Err(e) if attempt < READ_ATTEMPTS => drop(e),
                other => break other?,
            }
        };
        // One copy at a time, so another copy always holds what is being rewritten.
        let good = &recovered.bytes;
        for (f, buf) in files.iter().zip(&bufs) {
            let same = buf.iter().zip(good).take_while(|(a, b)| a == b).count();
            if same == buf.len() && same == good.len() {
                continue;
            }
            if same < buf.len() {
                disk.truncate(f, same as u64)?;
            }
            disk.append(f, &good[same..])?;
            disk.sync(f).await?;
        }
        let end = good.len() as u64;
        Ok((Wal { disk, files, end, synced: end }, recovered))
    }

    fn scan(disk: &dyn Disk, files: &[String]) -> Result<(Recovered, Vec<Vec<u8>>), WalError> {
        let bufs = files.iter().map(|f| disk.read(f, 0, disk.len(f))).collect::<Result<Vec<_>, _>>()?;
        Ok((parse(&bufs)?, bufs))
    }

    /// Appends one record to every copy; volatile until [`Wal::sync`].
    /// Returns where the record starts.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, DiskError> {
        let bytes = encode(payload);
        for f in &self.files {
            self.disk.append(f, &bytes)?;
        }
        let at = self.end;
        self.end += bytes.len() as u64;
        Ok(at)
    }

    /// Reads the record at `offset` from the first copy where it is intact.
    pub fn read(&self, offset: u64) -> Result<Vec<u8>, WalError> {
        let mut damaged = false;
        for f in &self.files {
            let header = match self.disk.read(f, offset, HEADER) {
                Ok(h) => h,
                Err(_) => continue,
            };
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
            let Ok(buf) = self.disk.read(f, offset, HEADER + len.min(1 << 26)) else {
                damaged = true;
                continue;
            };
            match record_at(&buf, 0) {
                At::Valid(len) => return Ok(buf[HEADER as usize..(HEADER + len) as usize].to_vec()),
                _ => damaged = true,
            }
        }
        Err(if damaged { WalError::Corrupt { offset } } else { WalError::Disk(DiskError::Io) })
    }

    pub async fn sync(&mut self) -> Result<(), DiskError> {
        for f in &self.files {
            self.disk.sync(f).await?;
        }
        self.synced = self.end;
        Ok(())
    }

    pub fn has_unsynced(&self) -> bool {
        self.end > self.synced
    }

    /// Cuts every copy back to what was last synced (after a failed write or sync).
    pub fn rollback(&mut self) -> Result<(), DiskError> {
        for f in &self.files {
            if self.disk.len(f) > self.synced {
                self.disk.truncate(f, self.synced)?;
            }
        }
        self.end = self.synced;
        Ok(())
    }
}

/// Recovers the records of a log from the bytes of its copies (see the module doc).
pub fn parse(bufs: &[Vec<u8>]) -> Result<Recovered, WalError> {
    let longest = bufs.iter().map(|b| b.len() as u64).max().unwrap_or(0);
    let mut rec = Recovered::default();
    let mut offset = 0;
    loop {
        let found: Vec<At> = bufs.iter().map(|b| record_at(b, offset)).collect();
        if let Some((copy, len)) = found.iter().enumerate().find_map(|(i, a)| match a {
            At::Valid(len) => Some((i, *len)),
            _ => None,
        }) {
            let (at, start) = (offset as usize, (offset + HEADER) as usize);
            let buf = &bufs[copy];
            rec.records.push(buf[start..start + len as usize].to_vec());
            rec.offsets.push(offset);
            rec.bytes.extend_from_slice(&buf[at..start + len as usize]);
            rec.repaired += found.iter().filter(|a| matches!(a, At::Damaged)).count() as u64;
            offset += HEADER + len;
        } else if found.iter().any(|a| matches!(a, At::Incomplete)) {
            rec.dropped_tail_bytes = longest - offset;
            return Ok(rec);
        } else {
            return Err(WalError::Corrupt { offset });
        }
    }
}
