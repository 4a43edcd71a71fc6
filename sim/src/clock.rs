//! A node's simulated clocks on top of simulated time: the monotonic clock runs
//! at the node's drift rate; the wall clock adds skew and jumps to it.

use futures::future::BoxFuture;
use madsim::time::Instant;
use mqsim_core::env::Clock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 2026-01-01T00:00:00Z: every node's wall clock starts here (plus its faults).
const WALL_EPOCH_MS: u64 = 1_767_225_600_000;

pub struct SimClock {
    start: Instant,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Simulated time and monotonic reading at the last drift change.
    anchor_real: Duration,
    anchor_mono: Duration,
    drift_ppm: i64,
    skew_ms: i64,
    jumped_ms: i64,
}

impl State {
    fn mono(&self, real: Duration) -> Duration {
        let dt = real.saturating_sub(self.anchor_real).as_nanos() as i128;
        let scaled = dt * (1_000_000 + self.drift_ppm as i128) / 1_000_000;
        self.anchor_mono + Duration::from_nanos(scaled.max(0) as u64)
    }
}

impl SimClock {
    /// `start` is the simulation's start: every node's clocks count from it.
    pub fn new(start: Instant) -> SimClock {
        SimClock { start, state: Arc::default() }
    }

    fn real(&self) -> Duration {
        madsim::time::Instant::now().duration_since(self.start)
    }

    /// Runs fast (positive) or slow (negative), in parts per million.
    pub fn set_drift(&self, ppm: i64) {
        let real = self.real();
        let mut st = self.state.lock().expect("clock");
        st.anchor_mono = st.mono(real);
        st.anchor_real = real;
        st.drift_ppm = ppm;
    }

    /// A standing offset of the wall clock.
    pub fn set_skew(&self, ms: i64) {
        self.state.lock().expect("clock").skew_ms = ms;
    }

    /// A permanent step of the wall clock (an operator or NTP setting it).
    pub fn jump(&self, ms: i64) {
        self.state.lock().expect("clock").jumped_ms += ms;
    }
}

impl Clock for SimClock {
    fn wall_ms(&self) -> u64 {
        let real = self.real();
        let st = self.state.lock().expect("clock");
        let ms = WALL_EPOCH_MS as i64 + st.mono(real).as_millis() as i64 + st.skew_ms + st.jumped_ms;
        ms.max(0) as u64
    }

    fn mono(&self) -> Duration {
        self.state.lock().expect("clock").mono(self.real())
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        // Sleep in simulated time for the local duration left at the current
        // rate; re-check, in case the drift changed meanwhile.
        let (start, state) = (self.start, self.state.clone());
        let deadline = self.mono() + d;
        Box::pin(async move {
            loop {
                let rest = {
                    let st = state.lock().expect("clock");
                    let now = st.mono(madsim::time::Instant::now().duration_since(start));
                    if now >= deadline {
                        return;
                    }
                    scale(deadline - now, st.drift_ppm)
                };
                madsim::time::sleep(rest.max(Duration::from_micros(1))).await;
            }
        })
    }
}

/// The simulated time it takes a clock with `drift_ppm` to advance by `local`.
fn scale(local: Duration, drift_ppm: i64) -> Duration {
    let ns = local.as_nanos() as i128 * 1_000_000 / (1_000_000 + drift_ppm as i128).max(1);
    Duration::from_nanos(ns as u64)
}
