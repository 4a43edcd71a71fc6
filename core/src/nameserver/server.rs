//! The NameServer node: answers route queries from its route table, takes
//! registrations, and drops brokers that stopped registering. It keeps
//! nothing on disk: after a restart it learns again from registrations.

use super::proto::{NameServer, Request, Response};
use super::routes::RouteTable;
use super::{BROKER_EXPIRY, SCAN_EVERY};
use crate::bugs::Bug;
use crate::env::Env;
use crate::probe::Probe;
use crate::rpc::{self, Rpc};
use std::sync::{Arc, Mutex};

pub async fn serve(env: Env) {
    let table = Arc::new(Mutex::new(RouteTable::default()));
    madsim::task::spawn(scan(env.clone(), table.clone()));
    let (rpc, mut requests) = Rpc::serve::<NameServer>(&env);
    while let Some(inc) = rpc::next_request(&mut requests).await {
        let now = now_ms(&env);
        let resp = {
            let mut t = table.lock().expect("routes");
            match &inc.req {
                Request::Register { broker, version, queues } => {
                    if !t.register(broker, *version, queues.clone(), now) {
                        env.probe(Probe::NameserverIgnoredOlderRegistration);
                    }
                    Response::Registered
                }
                Request::Routes { topic } => Response::Routes(t.routes(topic)),
            }
        };
        rpc.reply(&inc, &resp).await;
    }
}

fn now_ms(env: &Env) -> u64 {
    env.clock.mono().as_millis() as u64
}

/// Every 5 s (the first after 5 s): drops brokers silent for 120 s.
async fn scan(env: Env, table: Arc<Mutex<RouteTable>>) {
    loop {
        env.sleep(SCAN_EVERY).await;
        if env.bug(Bug::NameserverNeverExpires) {
            continue;
        }
        let expired = table.lock().expect("routes").scan(now_ms(&env), BROKER_EXPIRY.as_millis() as u64);
        if !expired.is_empty() {
            env.probe(Probe::NameserverExpiredBroker);
        }
    }
}
