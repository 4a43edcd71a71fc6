//! A session with the metadata service, as every node that holds one uses it:
//! its own keepalive task, independent of what its owner is busy with, an
//! `expired()` signal the owner can select on, ephemeral keys and
//! re-entrant locks that live exactly as long as the session.

use super::client::MetaClient;
use super::proto::{MetaError, SessionId, Stat};
use crate::env::Env;
use crate::random::Random;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long to wait before asking again when the service does not answer.
const RETRY: Duration = Duration::from_millis(500);

/// A live session, cheap to clone. Dropping every clone stops its keepalives
/// (the service then expires it); [`Session::close`] ends it at once.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    id: SessionId,
    meta: MetaClient,
    /// Fired once: the service said the session expired, or no keepalive was
    /// answered for a whole timeout, so the service may have expired it.
    expire: Mutex<Option<oneshot::Sender<()>>>,
    expired: Shared<oneshot::Receiver<()>>,
    /// When the last answered keepalive (or the open) was sent, by this node's clock.
    answered_since: Mutex<Duration>,
    timeout: Duration,
}

impl Inner {
    fn mark_expired(&self) {
        self.expire.lock().expect("session").take();
    }
}

impl Session {
    /// Opens a session with `timeout`, asking again (after a jittered pause)
    /// until the service grants one.
    pub async fn open(env: &Env, meta: &MetaClient, timeout: Duration) -> Session {
        loop {
            match Session::try_open(env, meta, timeout).await {
                Ok(session) => return session,
                Err(_) => env.sleep(env.random("session").jitter(RETRY)).await,
            }
        }
    }

    /// Asks the service for a session once.
    pub async fn try_open(env: &Env, meta: &MetaClient, timeout: Duration) -> Result<Session, MetaError> {
        let sent = env.clock.mono();
        let id = meta.open_session(timeout).await?;
        let (tx, rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            id,
            meta: meta.clone(),
            expire: Mutex::new(Some(tx)),
            expired: rx.shared(),
            answered_since: Mutex::new(sent),
            timeout,
        });
        madsim::task::spawn(keepalive(env.clone(), env.random("session"), Arc::downgrade(&inner), timeout));
        Ok(Session { inner })
    }

    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// Resolves once the session is (or may be) gone: its ephemeral keys and
    /// locks can no longer be counted on.
    pub fn expired(&self) -> impl std::future::Future<Output = ()> + Unpin + 'static {
        self.inner.expired.clone().map(|_| ())
    }

    pub fn is_expired(&self) -> bool {
        self.inner.expire.lock().expect("session").is_none()
    }

    /// Until when (this node's monotonic clock) the service cannot have
    /// expired the session: a whole timeout after the last answered
    /// keepalive was sent. Unlike [`Session::is_expired`] this does not wait
    /// for the keepalive task to notice, so it holds right after a pause.
    pub fn trusted_until(&self) -> Duration {
        *self.inner.answered_since.lock().expect("session") + self.inner.timeout
    }

    /// Creates an ephemeral key owned by this session.
    pub async fn create_ephemeral(&self, path: &str, value: Vec<u8>) -> Result<(String, Stat), MetaError> {
        let created = self.inner.meta.create(path, value, Some(self.id()), false).await;
        if created == Err(MetaError::SessionExpired) {
            self.inner.mark_expired();
        }
        created
    }

    /// Takes the lock `path` (an ephemeral key). Re-entrant: a lock this session
    /// already holds counts as taken, including one whose create timed out
    /// but happened, which would otherwise leak until the session ends.
    pub async fn lock(&self, path: &str) -> Lock {
        match self.create_ephemeral(path, Vec::new()).await {
            Ok(_) => Lock::Taken,
            Err(MetaError::NodeExists | MetaError::Timeout) => match self.owner(path).await {
                Some(owner) if owner == self.id() => Lock::AlreadyOurs,
                _ => Lock::NotOurs,
            },
            Err(_) => Lock::NotOurs,
        }
    }

    /// The session owning the ephemeral key `path`, if it exists and the service answers.
    pub async fn owner(&self, path: &str) -> Option<SessionId> {
        match self.inner.meta.get(path).await {
            Ok(Some((_, stat))) => stat.owner,
            _ => None,
        }
    }

    /// Releases a lock this session holds; a lock another session took
    /// meanwhile (after this one expired, say) stays.
    pub async fn unlock(&self, path: &str) {
        self.unlock_certainly(path).await;
    }

    /// [`Session::unlock`], saying whether the lock is certainly not this
    /// session's now (false: the service did not answer).
    pub async fn unlock_certainly(&self, path: &str) -> bool {
        match self.inner.meta.get(path).await {
            Ok(Some((_, stat))) if stat.owner == Some(self.id()) => {
                match self.inner.meta.delete(path, Some(stat.version)).await {
                    Ok(()) | Err(MetaError::NoNode | MetaError::BadVersion) => true,
                    Err(_) => false,
                }
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Ends the session now: the service deletes its ephemeral keys.
    pub async fn close(self) -> Result<(), MetaError> {
        let closed = self.inner.meta.close_session(self.id()).await;
        self.inner.mark_expired();
        closed
    }
}

/// What [`Session::lock`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    Taken,
    /// This session held it already.
    AlreadyOurs,
    /// Another session holds it, or the service did not say.
    NotOurs,
}

impl Lock {
    pub fn held(self) -> bool {
        self != Lock::NotOurs
    }
}

/// Heartbeats every third of the timeout (jittered) until the session is
/// dropped or gone. A session whose last answered heartbeat was sent a whole
/// timeout ago may have expired at the service: the owner is told so at once,
/// rather than after it learns for sure.
async fn keepalive(env: Env, random: Random, inner: Weak<Inner>, timeout: Duration) {
    let mut answered_since = env.clock.mono();
    loop {
        env.sleep(random.jitter(timeout / 3)).await;
        let Some(session) = inner.upgrade() else { return };
        if session.expire.lock().expect("session").is_none() {
            return;
        }
        let sent = env.clock.mono();
        match session.meta.heartbeat(session.id).await {
            Ok(()) => {
                answered_since = sent;
                *session.answered_since.lock().expect("session") = sent;
            }
            Err(MetaError::SessionExpired) => return session.mark_expired(),
            Err(_) if env.clock.mono().saturating_sub(answered_since) >= timeout => {
                return session.mark_expired();
            }
            Err(_) => {}
        }
    }
}
