//! The client side of the NameServer: a topic's routes, from the first
//! NameServer that answers.

use super::proto::{NameServer, Request, Response};
use crate::env::Env;
use std::time::Duration;

/// How long to wait for one NameServer before asking the next.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// The order in which to ask `n` NameServers, starting at `first % n`.
fn order(n: usize, first: usize) -> impl Iterator<Item = usize> {
    let start = if n == 0 { 0 } else { first % n };
    (0..n).map(move |i| (start + i) % n)
}

/// The routes of `topic` (each broker with the queue ids it lists), asking
/// NameServer `first % n`, then the next ones in turn when one does not answer
/// within [`TIMEOUT`]. `None` when none answered.
pub async fn routes(env: &Env, nameservers: &[String], first: usize, topic: &str) -> Option<Vec<(String, Vec<u32>)>> {
    let rpc = env.rpc();
    let req = Request::Routes { topic: topic.to_string() };
    for i in order(nameservers.len(), first) {
        let ns = &nameservers[i];
        match rpc.call::<NameServer>(ns, &req, TIMEOUT).await {
            Ok(Response::Routes(routes)) => return Some(routes),
            Ok(other) => tracing::warn!(%ns, "NameServer sent an answer of the wrong kind: {other:?}"),
            Err(e) => tracing::debug!(%ns, "routes of {topic}: {e}"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn asks_every_nameserver_once_starting_at_first_mod_n() {
        assert_eq!(order(3, 0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(order(3, 4).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(order(1, usize::MAX).collect::<Vec<_>>(), vec![0]);
        assert_eq!(order(0, 5).count(), 0);
    }
}
