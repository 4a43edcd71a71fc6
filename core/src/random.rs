//! Randomness per purpose: every component of a node draws from its own
//! stream, derived from the node's seed and the component's name, so a new
//! draw in one component never shifts the draws of another.

use rand::distributions::uniform::{SampleRange, SampleUniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The streams of one node incarnation, made on first use.
#[derive(Clone)]
pub struct Streams {
    seed: u64,
    made: Arc<Mutex<BTreeMap<&'static str, Random>>>,
}

impl Streams {
    pub fn new(seed: u64) -> Streams {
        Streams { seed, made: Arc::default() }
    }

    /// The stream named `purpose`; every caller naming it shares it.
    pub fn get(&self, purpose: &'static str) -> Random {
        let mut made = self.made.lock().expect("streams");
        made.entry(purpose).or_insert_with(|| Random::derived(self.seed, purpose)).clone()
    }
}

/// One stream of random draws, cheap to clone (clones share the stream).
#[derive(Clone)]
pub struct Random(Arc<Mutex<ChaCha8Rng>>);

/// FNV-1a: a stable hash of a purpose's name (std's hasher may change between releases).
fn stable_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Random {
    /// The stream `purpose` of the generator seeded with `seed`: ChaCha's own
    /// stream selector keeps the streams of one seed independent.
    pub fn derived(seed: u64, purpose: &str) -> Random {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stable_hash(purpose));
        Random(Arc::new(Mutex::new(rng)))
    }

    /// Runs `f` with the generator (for shuffles and choices).
    pub fn with<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.0.lock().expect("random stream"))
    }

    pub fn range<T: SampleUniform, R: SampleRange<T>>(&self, range: R) -> T {
        self.with(|r| r.gen_range(range))
    }

    pub fn chance(&self, p: f64) -> bool {
        self.with(|r| r.gen_bool(p))
    }

    pub fn duration(&self, lo: Duration, hi: Duration) -> Duration {
        self.range(lo..=hi)
    }

    /// `base` give or take a quarter, so retries and timers do not run in lockstep.
    pub fn jitter(&self, base: Duration) -> Duration {
        self.duration(base * 3 / 4, base * 5 / 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_in_one_stream_leaves_another_unchanged() {
        let draws = |extra: bool| {
            let streams = Streams::new(7);
            let (a, b) = (streams.get("a"), streams.get("b"));
            let mut seen = Vec::new();
            for _ in 0..10 {
                if extra {
                    a.range(0..u64::MAX);
                }
                seen.push(b.range(0..u64::MAX));
            }
            seen
        };
        assert_eq!(draws(false), draws(true));
    }

    #[test]
    fn streams_of_one_seed_differ_and_replay() {
        let s = Streams::new(7);
        let (a, b) = (s.get("a").range(0..u64::MAX), s.get("b").range(0..u64::MAX));
        assert_ne!(a, b);
        assert_eq!(a, Streams::new(7).get("a").range(0..u64::MAX));
        assert_ne!(a, Streams::new(8).get("a").range(0..u64::MAX));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let r = Random::derived(1, "jitter");
        for _ in 0..1000 {
            let d = r.jitter(Duration::from_millis(200));
            assert!((150..=250).contains(&d.as_millis()), "{d:?}");
        }
    }
}
