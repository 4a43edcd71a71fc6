//! A node's simulated disk: in-memory files with fsync semantics and faults.
//! Appends are volatile until synced; a crash keeps the synced bytes and,
//! as the seed decides, none, all or a torn prefix of the rest.

use futures::future::BoxFuture;
use mqsim_core::env::{Disk, DiskError};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Faults in force on one disk; set by the nemesis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskFaults {
    /// Chance per read, in thousandths, that one bit of the returned data flips.
    pub read_flip_per_mille: u32,
    /// Chance per operation, in thousandths, of an I/O error.
    pub io_error_per_mille: u32,
    /// Extra latency of every fsync.
    pub slow_fsync: Duration,
    /// Schedule action whose window aims a crash at this disk's next fsync.
    pub crash_at_fsync: Option<usize>,
}

/// Told (action, file) when a sync meets an aimed crash; the world then kills the node.
pub type FsyncCrash = Box<dyn Fn(usize, String) + Send + Sync>;

/// What a crash did to one file, for the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoss {
    pub file: String,
    pub unsynced: u64,
    pub kept: u64,
}

#[derive(Default)]
struct File {
    data: Vec<u8>,
    synced: usize,
    /// Counts truncations: a sync that spans one makes nothing new durable.
    truncations: u64,
}

pub struct SimDisk {
    state: Mutex<State>,
    on_aimed_crash: FsyncCrash,
}

struct State {
    files: BTreeMap<String, File>,
    faults: DiskFaults,
    rng: ChaCha8Rng,
    read_flips: u64,
    /// Syncs completed and bytes appended, for the run's counters.
    fsyncs: u64,
    bytes_written: u64,
}

/// Latency of a healthy fsync.
const FSYNC: std::ops::RangeInclusive<Duration> = Duration::from_micros(500)..=Duration::from_millis(2);

impl SimDisk {
    pub fn new(rng: ChaCha8Rng, on_aimed_crash: FsyncCrash) -> SimDisk {
        SimDisk {
            state: Mutex::new(State {
                files: BTreeMap::new(),
                faults: DiskFaults::default(),
                rng,
                read_flips: 0,
                fsyncs: 0,
                bytes_written: 0,
            }),
            on_aimed_crash,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("disk lock")
    }

    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    /// Power loss: unsynced bytes are lost wholly, kept, or kept up to a torn point.
    pub fn crash(&self) -> Vec<CrashLoss> {
        let mut st = self.lock();
        let State { files, rng, .. } = &mut *st;
        let mut losses = Vec::new();
        for (name, f) in files.iter_mut() {
            let unsynced = f.data.len() - f.synced;
            if unsynced == 0 {
                continue;
            }
            let kept = match rng.gen_range(0..4) {
                0 | 1 => 0,
                2 => rng.gen_range(0..unsynced),
                _ => unsynced,
            };
            f.data.truncate(f.synced + kept);
            f.synced = f.data.len();
            losses.push(CrashLoss { file: name.clone(), unsynced: unsynced as u64, kept: kept as u64 });
        }
        losses
    }

    /// Flips one bit at rest in a random non-empty file; returns (file, byte offset).
    pub fn corrupt_at_rest(&self, rng: &mut ChaCha8Rng) -> Option<(String, u64)> {
        let mut st = self.lock();
        let names: Vec<String> = st.files.iter().filter(|(_, f)| !f.data.is_empty()).map(|(n, _)| n.clone()).collect();
        if names.is_empty() {
            return None;
        }
        let name = names[rng.gen_range(0..names.len())].clone();
        let f = st.files.get_mut(&name).expect("listed");
        let at = rng.gen_range(0..f.data.len());
        f.data[at] ^= 1 << rng.gen_range(0..8);
        Some((name, at as u64))
    }

    /// How many reads returned a flipped bit.
    pub fn read_flips(&self) -> u64 {
        self.lock().read_flips
    }

    /// The bytes that would survive a crash now, per file (for final-state checks).
    /// Syncs completed and bytes appended so far.
    pub fn work(&self) -> (u64, u64) {
        let st = self.lock();
        (st.fsyncs, st.bytes_written)
    }

    pub fn durable_snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().files.iter().map(|(n, f)| (n.clone(), f.data[..f.synced].to_vec())).collect()
    }
}

impl State {
    fn io_error(&mut self) -> bool {
        let p = self.faults.io_error_per_mille;
        p > 0 && self.rng.gen_range(0..1000) < p
    }
}

impl Disk for SimDisk {
    fn append(&self, file: &str, data: &[u8]) -> Result<(), DiskError> {
        let mut st = self.lock();
        if st.io_error() {
            return Err(DiskError::Io);
        }
        st.files.entry(file.to_string()).or_default().data.extend_from_slice(data);
        st.bytes_written += data.len() as u64;
        Ok(())
    }

    fn read(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        let mut st = self.lock();
        if st.io_error() {
            return Err(DiskError::Io);
        }
        let (start, end) = (offset as usize, (offset + len) as usize);
        let mut out = match st.files.get(file) {
            Some(f) if end <= f.data.len() => f.data[start..end].to_vec(),
            None if len == 0 => Vec::new(),
            _ => return Err(DiskError::OutOfRange(file.to_string())),
        };
        let p = st.faults.read_flip_per_mille;
        if !out.is_empty() && p > 0 && st.rng.gen_range(0..1000) < p {
            let at = st.rng.gen_range(0..out.len());
            out[at] ^= 1 << st.rng.gen_range(0..8);
            st.read_flips += 1;
        }
        Ok(out)
    }

    fn len(&self, file: &str) -> u64 {
        self.lock().files.get(file).map_or(0, |f| f.data.len() as u64)
    }

    fn truncate(&self, file: &str, len: u64) -> Result<(), DiskError> {
        let mut st = self.lock();
        if st.io_error() {
            return Err(DiskError::Io);
        }
        if let Some(f) = st.files.get_mut(file) {
            f.data.truncate(len as usize);
            f.synced = f.synced.min(f.data.len());
            f.truncations += 1;
        }
        Ok(())
    }

    fn remove(&self, file: &str) -> Result<(), DiskError> {
        let mut st = self.lock();
        if st.io_error() {
            return Err(DiskError::Io);
        }
        st.files.remove(file);
        Ok(())
    }

    fn list(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    fn sync<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<(), DiskError>> {
        Box::pin(async move {
            let aimed = self.lock().faults.crash_at_fsync.take();
            if let Some(action) = aimed {
                // The write happened; the sync never returns: the node dies first.
                (self.on_aimed_crash)(action, file.to_string());
                return futures::future::pending().await;
            }
            let (delay, failed, upto, truncations) = {
                let mut st = self.lock();
                let delay = st.rng.gen_range(FSYNC) + st.faults.slow_fsync;
                let (len, truncations) = st.files.get(file).map_or((0, 0), |f| (f.data.len(), f.truncations));
                (delay, st.io_error(), len, truncations)
            };
            madsim::time::sleep(delay).await;
            if failed {
                return Err(DiskError::Io);
            }
            // Only what was written before the sync began is made durable; a
            // crash during the sleep kills this task and nothing is synced.
            let mut st = self.lock();
            st.fsyncs += 1;
            if let Some(f) = st.files.get_mut(file).filter(|f| f.truncations == truncations) {
                f.synced = f.synced.max(upto.min(f.data.len()));
            }
            Ok(())
        })
    }
}
