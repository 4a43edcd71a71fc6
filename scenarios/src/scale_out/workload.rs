//! What the consumers, the leader brokers' recorder and the checker node of
//! `scale-out` do (the producers are `pubsub`'s).

use super::GROUP;
use crate::kit::{complete, patiently};
use crate::pubsub::workload::{consumer_config, read_queue, run_recorded, Work};
use crate::pubsub::{self, SERVER};
use mqsim_core::broker::balance::Move;
use mqsim_core::broker::leader::LeaderObserver;
use mqsim_core::broker::log_name;
use mqsim_core::env::Env;
use mqsim_core::ledger::LedgerClient;
use mqsim_core::managed::cursor;
use mqsim_core::message::QueueId;
use mqsim_sim::history::{Call, Moved, OpId, Ret};
use mqsim_sim::World;
use std::sync::Arc;
use std::time::Duration;

/// A consumer of the group, every tag, until `stop`.
pub async fn consumer(env: Env, world: Arc<World>, plan: pubsub::Plan, stop: Duration) {
    let config = consumer_config(&plan, GROUP, Vec::new());
    let work = Arc::new(Work { env: env.clone() });
    run_recorded(env, world, config, work, stop).await;
}

/// Records what a broker does as leader as client operations of that broker.
pub(crate) struct LeaderRecorder {
    pub(crate) world: Arc<World>,
    pub(crate) node: String,
}

impl LeaderObserver for LeaderRecorder {
    fn elect_start(&self) -> u64 {
        self.world.history.invoke(&self.node, Call::Lead {}).0
    }

    fn elect_end(&self, token: u64, term: Result<u64, bool>) {
        let op = OpId(token);
        match term {
            Ok(term) => self.world.history.ok(&self.node, op, Ret::Lead { term }),
            Err(true) => self.world.history.fail(&self.node, op, "not the lock's owner"),
            Err(false) => self.world.history.info(&self.node, op, "no answer"),
        }
    }

    fn assign_start(&self, term: u64, moves: &[Move]) -> u64 {
        let moves = moves
            .iter()
            .map(|m| Moved {
                topic: m.queue.topic.clone(),
                queue: m.queue.queue,
                from: m.from.clone(),
                to: m.to.clone(),
            })
            .collect();
        self.world.history.invoke(&self.node, Call::Assign { term, moves }).0
    }

    fn assign_end(&self, token: u64, outcome: Result<u64, bool>) {
        let op = OpId(token);
        match outcome {
            Ok(version) => self.world.history.ok(&self.node, op, Ret::Assign { version }),
            Err(true) => self.world.history.fail(&self.node, op, "not written".to_string()),
            Err(false) => self.world.history.info(&self.node, op, "no answer".to_string()),
        }
    }
}

/// The checker node: reads every queue whole from storage and the group's
/// durable committed offsets.
pub async fn final_reads(env: Env, world: Arc<World>, plan: pubsub::Plan) {
    let c = LedgerClient::new(&env, SERVER);
    for queue in 0..plan.queues {
        read_queue(&env, &world, &c, &plan.topic, queue, "scale-out-final").await;
        let log = log_name(&QueueId::new(plan.topic.clone(), queue));
        let call = Call::FetchOffset { group: GROUP.into(), topic: plan.topic.clone(), queue };
        let op = world.history.invoke(&env.name, call);
        let read = patiently(&env, "scale-out-final", || cursor::read(&c.meta, &log, GROUP)).await;
        complete(&env, &world, op, read, |offset| Ret::FetchOffset { offset });
    }
}
