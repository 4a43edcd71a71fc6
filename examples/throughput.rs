//! Seeds per second, simulated-time speed-up and messages per wall second of
//! a scenario, in-process on one core; exits 1 if any seed failed (printing
//! the first 20 failures). Compare the message rate with `examples/bare_madsim`.
//! `cargo run --release --example throughput -- [SCENARIO] [SEEDS] [FIRST]`

use mqsim_scenarios::{find, RunSpec};

/// Simulations allocate many small, short-lived objects (messages, futures,
/// timers); mimalloc handles that faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("meta", String::as_str);
    let seeds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let first: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let Some(scenario) = find(name) else {
        eprintln!("error: unknown scenario '{name}'");
        std::process::exit(2);
    };
    let (start, mut sim_ms, mut ops, mut failed) = (Instant::now(), 0, 0, 0);
    let mut work = mqsim_sim::Counters::default();
    for seed in first..first + seeds {
        let outcome = scenario.run(&RunSpec { seed, ..RunSpec::default() });
        sim_ms += outcome.stats.sim_ms;
        ops += outcome.stats.ops;
        work.add(&outcome.stats.counters);
        if let Some(v) = outcome.violations.first() {
            if failed < 20 {
                println!("FAIL {name} seed={seed} {}: {}", v.invariant, v.detail);
            }
            failed += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "{name}: seeds {first}..{} ({failed} failed) in {wall:.2}s: {:.1} seeds/s, {:.0}x real time, {:.0} ops/s, \
         {:.0} messages/s, {:.0} fsyncs/s, peak memory {} MiB",
        first + seeds - 1,
        seeds as f64 / wall,
        sim_ms as f64 / 1000.0 / wall,
        ops as f64 / wall,
        work.messages_sent as f64 / wall,
        work.fsyncs as f64 / wall,
        mqsim_sim::counters::peak_rss_kib() / 1024
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
