//! Planted bugs: named protocol mistakes, off by default, each switched on at the
//! exact place where the mistake would live, so users can measure whether a
//! checker and a fault profile catch it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// The metadata service answers a write before its log record is fsynced.
    MetaAckBeforeFsync,
}

impl Bug {
    pub const ALL: &'static [Bug] = &[Bug::MetaAckBeforeFsync];

    pub fn name(self) -> &'static str {
        match self {
            Bug::MetaAckBeforeFsync => "meta-ack-before-fsync",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Bug::MetaAckBeforeFsync => {
                "metadata service acknowledges writes before fsync; a crash loses acknowledged writes"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.iter().copied().find(|b| b.name() == name)
    }
}

/// The set of planted bugs switched on for one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bugs(u64);

impl Bugs {
    pub fn none() -> Bugs {
        Bugs(0)
    }

    pub fn with(self, bug: Bug) -> Bugs {
        Bugs(self.0 | 1 << bug as u64)
    }

    pub fn has(self, bug: Bug) -> bool {
        self.0 & (1 << bug as u64) != 0
    }
}
