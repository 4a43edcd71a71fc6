//! The yardstick for scenario speed: a bare madsim request/reply loop, with
//! no faults, no history and no checker. Four clients call one server as
//! fast as madsim's network lets them (its default 1-10 ms latency).
//! Prints messages per wall second and × real time, to compare with
//! `examples/throughput`'s figures for each scenario.
//! `cargo run --release --example bare_madsim -- [SIMULATED_SECONDS]`

use madsim::net::Endpoint;
use madsim::runtime::{Handle, Runtime};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const TAG: u64 = 1;

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(300);
    let messages = Arc::new(AtomicU64::new(0));
    let counted = messages.clone();
    let started = Instant::now();
    Runtime::with_seed_and_config(1, madsim::Config::default()).block_on(async move {
        let server: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let handle = Handle::current();
        handle
            .create_node()
            .ip(server.ip())
            .init(move || async move {
                let ep = Endpoint::bind(server).await.unwrap();
                loop {
                    let (payload, from) = ep.recv_from_raw(TAG).await.unwrap();
                    ep.send_to_raw(from, TAG, payload).await.unwrap();
                }
            })
            .build();
        for i in 0..CLIENTS {
            let (counted, ip) = (counted.clone(), format!("10.0.1.{}", i + 1));
            handle
                .create_node()
                .ip(ip.parse().unwrap())
                .init(move || {
                    let (counted, ip) = (counted.clone(), ip.clone());
                    async move {
                        let ep = Endpoint::bind(format!("{ip}:7000").parse::<SocketAddr>().unwrap()).await.unwrap();
                        let mut n = 0u64;
                        loop {
                            n += 1;
                            ep.send_to_raw(server, TAG, Box::new(n.to_le_bytes().to_vec())).await.unwrap();
                            let _ = ep.recv_from_raw(TAG).await.unwrap();
                            counted.fetch_add(2, Ordering::Relaxed);
                        }
                    }
                })
                .build();
        }
        madsim::time::sleep(Duration::from_secs(secs)).await;
    });
    let wall = started.elapsed().as_secs_f64();
    let messages = messages.load(Ordering::Relaxed);
    println!(
        "bare madsim request/reply, {CLIENTS} clients: {messages} messages in {secs} simulated s, {wall:.2} s wall: \
         {:.0} messages/s, {:.0}x real time",
        messages as f64 / wall,
        secs as f64 / wall
    );
}
