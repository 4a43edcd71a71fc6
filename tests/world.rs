//! The simulated world's semantics: disk, clock, message filters, partitions,
//! pause. Each test runs inside a seeded simulation.

use mqsim_core::bugs::Bugs;
use mqsim_core::env::{Disk, DiskError};
use mqsim_core::meta::{self, MetaClient, MetaError};
use mqsim_core::wal::{Wal, WalError};
use mqsim_sim::disk::DiskFaults;
use mqsim_sim::net::{Effect, FilterRule};
use mqsim_sim::world::{self, World};
use mqsim_sim::{Fault, FaultAction, Schedule};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs `body` on a node of a fresh world and returns what it returned.
fn on_node<T, F, Fut>(seed: u64, setup: impl FnOnce(&Arc<World>), body: F) -> T
where
    T: Send + 'static,
    F: Fn(mqsim_core::env::Env, Arc<World>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    world::run(seed, Bugs::none(), |w| async move {
        setup(&w);
        let out: Arc<Mutex<Option<T>>> = Arc::default();
        let (slot, world, body) = (out.clone(), w.clone(), Arc::new(body));
        w.add_node("probe", move |env| {
            let (slot, world, body) = (slot.clone(), world.clone(), body.clone());
            async move {
                let v = body(env, world).await;
                *slot.lock().unwrap() = Some(v);
            }
        });
        while out.lock().unwrap().is_none() {
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        let v = out.lock().unwrap().take().unwrap();
        v
    })
}

fn with_meta(w: &Arc<World>) {
    w.add_node("meta-0", meta::serve);
}

fn client(env: &mqsim_core::env::Env) -> MetaClient {
    MetaClient::new(env, "meta-0", Duration::from_millis(500))
}

#[test]
fn synced_data_survives_a_crash_and_unsynced_data_is_lost_wholly_or_as_a_prefix() {
    let (mut lost, mut torn, mut kept) = (0, 0, 0);
    for seed in 0..60 {
        let (before, after) = on_node(
            seed,
            |_| {},
            |env, world| async move {
                env.disk.append("f", b"synced-part|").unwrap();
                env.disk.sync("f").await.unwrap();
                env.disk.append("f", b"first-unsynced|").unwrap();
                env.disk.append("f", b"second-unsynced").unwrap();
                let before = env.disk.read("f", 0, env.disk.len("f")).unwrap();
                world.disk("probe").crash();
                let disk = world.disk("probe");
                (before, disk.read("f", 0, disk.len("f")).unwrap())
            },
        );
        assert!(after.starts_with(b"synced-part|"), "seed {seed}: synced bytes lost");
        assert!(before.starts_with(&after), "seed {seed}: what survives is a prefix of what was written");
        match after.len() {
            12 => lost += 1,
            n if n == before.len() => kept += 1,
            _ => torn += 1,
        }
    }
    assert!(lost > 0 && torn > 0 && kept > 0, "all three outcomes occur: {lost} {torn} {kept}");
}

#[test]
fn sync_covers_only_what_was_written_before_it_began() {
    on_node(
        1,
        |_| {},
        |env, world| async move {
            env.disk.append("f", b"abc").unwrap();
            let disk = env.disk.clone();
            let sync = madsim::task::spawn(async move { disk.sync("f").await });
            madsim::time::sleep(Duration::from_micros(100)).await; // the sync has begun
            env.disk.append("f", b"def").unwrap();
            sync.await.unwrap().unwrap();
            assert_eq!(world.disk("probe").durable_snapshot()["f"], b"abc");
        },
    );
}

#[test]
fn a_bit_flip_at_rest_is_caught_by_the_checksum_and_survived_with_a_mirror() {
    on_node(
        2,
        |_| {},
        |env, _| async move {
            let (mut wal, _) = Wal::open(env.disk.clone(), "one", 1).await.unwrap();
            let (mut mirrored, _) = Wal::open(env.disk.clone(), "two", 2).await.unwrap();
            for i in 0..20u32 {
                wal.append(&i.to_le_bytes()).unwrap();
                mirrored.append(&i.to_le_bytes()).unwrap();
            }
            wal.sync().await.unwrap();
            mirrored.sync().await.unwrap();
            // Flip one bit in the payload of record 10 (24 bytes a record) of the
            // single copy and of one mirror copy.
            let at = 10 * 24 + 21;
            for file in ["one.0", "two.1"] {
                let mut bytes = env.disk.read(file, 0, env.disk.len(file)).unwrap();
                bytes[at] ^= 0x10;
                env.disk.truncate(file, 0).unwrap();
                env.disk.append(file, &bytes).unwrap();
                env.disk.sync(file).await.unwrap();
            }
            let single = Wal::open(env.disk.clone(), "one", 1).await.err();
            assert_eq!(single, Some(WalError::Corrupt { seq: 10 }), "damaged record refused, never returned");
            let (mut reopened, found) = Wal::open(env.disk.clone(), "two", 2).await.unwrap();
            assert_eq!(found.records.len(), 20);
            assert_eq!(found.records[10], 10u32.to_le_bytes(), "taken from the intact copy");
            assert_eq!(found.repaired, 1);
            reopened.append(&20u32.to_le_bytes()).unwrap();
            reopened.sync().await.unwrap();
            assert_eq!(Wal::open(env.disk.clone(), "two", 2).await.unwrap().1.records.len(), 21, "appends go on");
        },
    );
}

#[test]
fn a_record_synced_in_one_mirror_only_is_copied_to_the_other_at_recovery() {
    on_node(
        12,
        |_| {},
        |env, _| async move {
            let (mut wal, _) = Wal::open(env.disk.clone(), "m", 2).await.unwrap();
            for i in 0..20u32 {
                wal.append(&i.to_le_bytes()).unwrap();
            }
            wal.sync().await.unwrap();
            // A crash between the syncs of the two copies: record 20 only in m.0.
            wal.append(&20u32.to_le_bytes()).unwrap();
            env.disk.sync("m.0").await.unwrap();
            env.disk.truncate("m.1", 20 * 24).unwrap();
            let (_, found) = Wal::open(env.disk.clone(), "m", 2).await.unwrap();
            assert_eq!((found.records.len(), found.repaired), (21, 1), "record 20 kept and copied to m.1");
            // Now one flip at rest in m.0's copy of record 20 is survivable.
            let mut bytes = env.disk.read("m.0", 0, env.disk.len("m.0")).unwrap();
            bytes[20 * 24 + 21] ^= 1;
            env.disk.truncate("m.0", 0).unwrap();
            env.disk.append("m.0", &bytes).unwrap();
            let (_, found) = Wal::open(env.disk.clone(), "m", 2).await.unwrap();
            assert_eq!(found.records[20], 20u32.to_le_bytes());
        },
    );
}

#[test]
fn bit_flips_on_read_are_retried_and_never_returned_as_data() {
    on_node(
        3,
        |_| {},
        |env, world| async move {
            let (mut wal, _) = Wal::open(env.disk.clone(), "log", 1).await.unwrap();
            for i in 0..50u32 {
                wal.append(&i.to_le_bytes()).unwrap();
            }
            wal.sync().await.unwrap();
            let disk = world.disk("probe");
            // Every read flips a bit: the log is refused, never misread.
            disk.set_faults(DiskFaults { read_flip_per_mille: 1000, ..Default::default() });
            assert!(matches!(Wal::open(env.disk.clone(), "log", 1).await, Err(WalError::Corrupt { .. })));
            // Some reads flip a bit: retries get a clean read.
            disk.set_faults(DiskFaults { read_flip_per_mille: 300, ..Default::default() });
            let before = disk.read_flips();
            let mut opened = 0;
            for _ in 0..10 {
                if let Ok((_, found)) = Wal::open(env.disk.clone(), "log", 1).await {
                    let expected: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_le_bytes().to_vec()).collect();
                    assert_eq!(found.records, expected);
                    opened += 1;
                }
            }
            assert!(disk.read_flips() > before, "flips happened while opening");
            assert!(opened >= 8, "retries got through: {opened}/10");
        },
    );
}

#[test]
fn io_errors_are_surfaced_to_the_caller() {
    on_node(
        4,
        |_| {},
        |env, world| async move {
            world.disk("probe").set_faults(DiskFaults { io_error_per_mille: 1000, ..Default::default() });
            assert_eq!(env.disk.append("f", b"x"), Err(DiskError::Io));
            assert_eq!(env.disk.sync("f").await, Err(DiskError::Io));
            assert!(env.disk.read("f", 0, 0).is_err());
            world.disk("probe").set_faults(DiskFaults::default());
            assert_eq!(env.disk.append("f", b"x"), Ok(()));
        },
    );
}

#[test]
fn slow_fsync_takes_its_time() {
    let took = on_node(
        5,
        |_| {},
        |env, world| async move {
            world.disk("probe").set_faults(DiskFaults { slow_fsync: Duration::from_millis(400), ..Default::default() });
            env.disk.append("f", b"x").unwrap();
            let t0 = world.elapsed();
            env.disk.sync("f").await.unwrap();
            world.elapsed() - t0
        },
    );
    assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(410), "{took:?}");
}

#[test]
fn clocks_skew_drift_and_jump() {
    on_node(
        6,
        |_| {},
        |env, world| async move {
            let clock = world.clock("probe");
            let wall0 = env.clock.wall_ms();
            clock.set_skew(5_000);
            assert_eq!(env.clock.wall_ms() - wall0, 5_000, "skew offsets the wall clock");
            clock.set_skew(0);
            clock.jump(-2_000);
            assert_eq!(wall0 - env.clock.wall_ms(), 2_000, "a jump steps it back");

            // +10% drift: ten local seconds pass in about 9.09 simulated seconds.
            clock.set_drift(100_000);
            let (mono0, real0) = (env.clock.mono(), world.elapsed());
            env.clock.sleep(Duration::from_secs(10)).await;
            let local = env.clock.mono() - mono0;
            let real = world.elapsed() - real0;
            assert!(local >= Duration::from_secs(10) && local < Duration::from_millis(10_001), "{local:?}");
            assert!((real.as_secs_f64() - 10.0 / 1.1).abs() < 0.001, "{real:?}");

            // -50% drift: one real second is half a local second.
            clock.set_drift(-500_000);
            let mono1 = env.clock.mono();
            madsim::time::sleep(Duration::from_secs(1)).await;
            let half = env.clock.mono() - mono1;
            assert!((half.as_secs_f64() - 0.5).abs() < 0.001, "{half:?}");
            let before = env.clock.mono();
            clock.set_drift(0);
            assert!(env.clock.mono() >= before, "a drift change never moves the monotonic clock back");
        },
    );
}

fn schedule(actions: Vec<(u64, u64, Fault)>) -> Schedule {
    Schedule {
        actions: actions.into_iter().map(|(at_ms, for_ms, fault)| FaultAction { at_ms, for_ms, fault }).collect(),
    }
}

fn nodes(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_per_kind_filter_drops_only_the_matching_messages_for_its_window() {
    let rule = FilterRule {
        from: Some("probe".into()),
        to: None,
        kind: Some(mqsim_core::meta::kind::GET),
        reply: None,
        effect: Effect::Drop { percent: 100 },
    };
    let setup = move |w: &Arc<World>| {
        with_meta(w);
        w.spawn_nemesis(schedule(vec![(1_000, 5_000, Fault::Filter { rule: rule.clone() })]));
    };
    on_node(7, setup, |env, world| async move {
        let meta = client(&env);
        world.sleep_until(Duration::from_secs(2)).await;
        assert_eq!(meta.get("/a").await, Err(MetaError::Timeout), "Get from probe is dropped");
        assert!(meta.create("/a", b"1".to_vec(), None, false).await.is_ok(), "Create passes");
        world.sleep_until(Duration::from_secs(7)).await;
        assert_eq!(meta.get("/a").await.unwrap().unwrap().0, b"1", "the window has ended");
    });
}

#[test]
fn duplicated_and_reordered_requests_execute_at_most_once_even_across_a_restart() {
    for seed in 0..8 {
        let rule = FilterRule {
            from: Some("probe".into()),
            to: None,
            kind: None,
            reply: Some(false),
            effect: Effect::Duplicate { percent: 100 },
        };
        let reorder =
            FilterRule { from: None, to: None, kind: None, reply: None, effect: Effect::Reorder { max_ms: 400 } };
        let setup = move |w: &Arc<World>| {
            with_meta(w);
            w.spawn_nemesis(schedule(vec![
                (0, 20_000, Fault::Filter { rule: rule.clone() }),
                (0, 20_000, Fault::Filter { rule: reorder.clone() }),
                (3_000, 300, Fault::Crash { node: "meta-0".into() }),
                (6_000, 300, Fault::Crash { node: "meta-0".into() }),
            ]));
        };
        on_node(100 + seed, setup, |env, world| async move {
            let meta = client(&env);
            for i in 0..60u32 {
                let _ = meta.create("/q/n-", i.to_le_bytes().to_vec(), None, true).await;
            }
            world.sleep_until(Duration::from_secs(25)).await;
            let mut seen = std::collections::BTreeSet::new();
            for name in meta.children("/q").await.unwrap() {
                let (value, _) = meta.get(&format!("/q/{name}")).await.unwrap().unwrap();
                assert!(seen.insert(value.clone()), "{value:?} was created twice");
            }
            let stats = world.network.stats();
            assert!(stats.duplicated >= 40, "requests were duplicated: {stats:?}");
        });
    }
}

#[test]
fn one_way_partitions_lose_one_direction_only() {
    let setup = |w: &Arc<World>| {
        with_meta(w);
        w.spawn_nemesis(schedule(vec![
            (1_000, 3_000, Fault::OneWay { from: nodes(&["probe"]), to: nodes(&["meta-0"]) }),
            (5_000, 3_000, Fault::OneWay { from: nodes(&["meta-0"]), to: nodes(&["probe"]) }),
        ]));
    };
    on_node(9, setup, |env, world| async move {
        let meta = client(&env);
        world.sleep_until(Duration::from_secs(2)).await;
        assert_eq!(meta.create("/x", b"1".to_vec(), None, false).await, Err(MetaError::Timeout));
        world.sleep_until(Duration::from_millis(4_500)).await;
        assert_eq!(meta.get("/x").await, Ok(None), "the request never arrived");
        // Requests reach the service, which executes them; only the answers are lost.
        world.sleep_until(Duration::from_secs(6)).await;
        assert_eq!(meta.create("/y", b"2".to_vec(), None, false).await, Err(MetaError::Timeout));
        world.sleep_until(Duration::from_secs(9)).await;
        assert_eq!(meta.get("/y").await.unwrap().unwrap().0, b"2", "the request took effect");
    });
}

#[test]
fn a_paused_node_answers_only_after_it_resumes() {
    let setup = |w: &Arc<World>| {
        with_meta(w);
        w.spawn_nemesis(schedule(vec![(2_000, 4_000, Fault::Pause { node: "meta-0".into() })]));
    };
    let answered_at = on_node(10, setup, |env, world| async move {
        let meta = MetaClient::new(&env, "meta-0", Duration::from_secs(10));
        world.sleep_until(Duration::from_secs(3)).await;
        meta.create("/p", vec![], None, false).await.unwrap();
        world.elapsed()
    });
    assert!(answered_at >= Duration::from_secs(6) && answered_at < Duration::from_millis(6_100), "{answered_at:?}");
}

#[test]
fn an_acknowledged_write_survives_a_crash_of_the_service() {
    let setup = |w: &Arc<World>| {
        with_meta(w);
        w.spawn_nemesis(schedule(vec![(3_000, 2_000, Fault::Crash { node: "meta-0".into() })]));
    };
    on_node(11, setup, |env, world| async move {
        let meta = client(&env);
        world.sleep_until(Duration::from_secs(1)).await;
        meta.create("/durable", b"v".to_vec(), None, false).await.unwrap();
        world.sleep_until(Duration::from_secs(4)).await;
        assert_eq!(meta.get("/durable").await, Err(MetaError::Timeout), "down");
        world.sleep_until(Duration::from_secs(6)).await;
        // The first call to the restarted service ends unknown (see rpc.rs); ask again.
        let mut got = meta.get("/durable").await;
        if got == Err(MetaError::Timeout) {
            got = meta.get("/durable").await;
        }
        assert_eq!(got.unwrap().unwrap().0, b"v", "acknowledged write kept");
    });
}

#[test]
fn a_node_the_scenario_crashes_stays_down_through_later_fault_windows() {
    world::run(13, Bugs::none(), |w| async move {
        with_meta(&w);
        w.add_node("bookie-x", |_env| std::future::pending::<()>());
        w.spawn_nemesis(schedule(vec![
            (2_000, 1_000, Fault::Pause { node: "bookie-x".into() }),
            (3_000, 1_000, Fault::Crash { node: "meta-0".into() }),
        ]));
        w.sleep_until(Duration::from_secs(1)).await;
        w.crash("bookie-x");
        w.sleep_until(Duration::from_secs(5)).await;
        assert!(!w.is_up("bookie-x"), "a fault window brought a lost node back");
        assert!(w.is_up("meta-0"), "the crash window ended with a restart");
        w.restart("bookie-x");
        assert!(w.is_up("bookie-x"));
    });
}

/// A node serving two protocols (the metadata service and a bookie that
/// registers with it) answers both, each from its own queue.
#[test]
fn a_node_serves_two_protocols_at_once() {
    let answers = on_node(
        3,
        |w| {
            w.add_node("both", |env| async move {
                madsim::task::spawn(meta::serve(env.clone()));
                mqsim_core::bookie::serve(env, "both".into()).await
            })
        },
        |env, _| async move {
            let rpc = env.rpc();
            let meta_req = meta::Request::Children { path: mqsim_core::bookie::REGISTRY.into() };
            let lac_req = mqsim_core::bookie::Request::ReadLac { ledger: 1, fence: false };
            let mut answers = Vec::new();
            for _ in 0..30 {
                env.sleep(Duration::from_millis(500)).await;
                let listed = rpc.call::<meta::Meta>("both", &meta_req, Duration::from_secs(1)).await;
                let lac = rpc.call::<mqsim_core::bookie::Bookie>("both", &lac_req, Duration::from_secs(1)).await;
                answers.push((listed.map(|r| r.result), lac));
            }
            answers
        },
    );
    let registered = Ok(Ok(meta::Reply::Children(vec!["both".into()])));
    let last = answers.last().unwrap();
    assert_eq!(last.0, registered, "{answers:?}");
    assert_eq!(last.1, Ok(mqsim_core::bookie::Response::Lac(-1)), "{answers:?}");
}

/// Each component draws from its own stream: an extra draw in one (the
/// workload) leaves the draws of another (ledger placement) on the same node
/// as they were, though both run interleaved with timers in between.
#[test]
fn a_new_draw_in_one_component_leaves_another_components_draws_unchanged() {
    let run = |extra: bool| {
        on_node(
            5,
            |_| {},
            move |env, _| async move {
                let (workload, placement) = (env.random("workload"), env.random("ledger-placement"));
                let mut decided = Vec::new();
                for _ in 0..20 {
                    env.sleep(workload.duration(Duration::from_millis(1), Duration::from_millis(50))).await;
                    if extra {
                        workload.range(0..10u32);
                    }
                    decided.push(placement.range(0..1_000_000u32));
                }
                decided
            },
        )
    };
    assert_eq!(run(false), run(true));
}

/// A session keeps itself alive while its owner is busy, and tells the owner
/// when the service expired it (here: the node is cut off for longer than
/// the session's timeout).
#[test]
fn a_session_keeps_alive_on_its_own_and_signals_expiry() {
    let (alive_after_busy, expired_when_cut_off) = on_node(
        4,
        |w| {
            with_meta(w);
            let isolate = Fault::Isolate { node: "probe".into() };
            w.spawn_nemesis(Schedule { actions: vec![FaultAction { at_ms: 20_000, for_ms: 8_000, fault: isolate }] });
        },
        |env, world| async move {
            let session = meta::Session::open(&env, &client(&env), Duration::from_secs(4)).await;
            // The owner is busy for 15 s without touching the session.
            env.sleep(Duration::from_secs(15)).await;
            let alive = !session.is_expired() && session.lock("/lock").await == meta::Lock::Taken;
            // Re-entrant: the lock it holds is its own.
            let again = session.lock("/lock").await == meta::Lock::AlreadyOurs;
            session.expired().await;
            (alive && again, world.elapsed() >= Duration::from_secs(20))
        },
    );
    assert!(alive_after_busy);
    assert!(expired_when_cut_off);
}
