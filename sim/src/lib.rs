//! The simulated world that tests the core: madsim nodes with their own disks
//! and clocks, a fault-filtering transport, a seeded nemesis and a history.

pub mod clock;
pub mod counters;
pub mod disk;
pub mod history;
pub mod log;
pub mod nemesis;
pub mod net;
pub mod trace;
pub mod world;

pub use counters::Counters;
pub use history::{History, Record};
pub use nemesis::{Fault, FaultAction, FaultKind, Schedule};
pub use world::World;

/// A ChaCha rng for one purpose of one run, derived from the run's seed so
/// that independent consumers of randomness never disturb each other.
pub fn rng_for(seed: u64, purpose: &str) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ h)
}
