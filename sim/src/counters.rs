//! What a run did, counted: messages, bytes and disk work. Reports put them
//! beside wall time, so a scenario's message rate can be compared with a bare
//! madsim request/reply loop's.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages nodes sent, and their bytes.
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Copies handed to a receiving node (a duplicated message counts twice).
    pub messages_delivered: u64,
    /// Lost to a drop rule or a partition (at send or in flight).
    pub messages_dropped: u64,
    /// Extra copies made by duplicate rules.
    pub messages_duplicated: u64,
    /// Syncs that completed, and bytes appended to files.
    pub fsyncs: u64,
    pub disk_bytes: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.messages_sent += other.messages_sent;
        self.bytes_sent += other.bytes_sent;
        self.messages_delivered += other.messages_delivered;
        self.messages_dropped += other.messages_dropped;
        self.messages_duplicated += other.messages_duplicated;
        self.fsyncs += other.fsyncs;
        self.disk_bytes += other.disk_bytes;
    }
}

/// This process's peak resident memory in KiB (Linux; 0 elsewhere).
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:"));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}
