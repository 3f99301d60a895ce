//! Cancel requests: every client gets pgwarden's own BackendKeyData; a CancelRequest carrying it is
//! forwarded to the server that is running that client's query, with the server's own key.
//!
//! A cancel must never hit another client's query. Poolers get this wrong when a server is released
//! to another client while a cancel aimed at it is still on its way; here a server cannot be unlinked
//! while a cancel for it is in flight (the release waits for PostgreSQL to close the cancel connection,
//! which it does after signalling the backend).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::FastMap;
use crate::conns::{CancelPhase, ClientRecord, Registered, RegistryRef};
use crate::net::Stream;
use crate::pool::Pool;
use crate::protocol::startup;

const SHARDS: usize = 16;
/// How long a release waits for an in-flight cancel before giving up on it; the cancel itself is bounded by
/// cancel_wait_timeout.
const CANCEL_SETTLE: Duration = Duration::from_secs(15);

/// Where a cancel for a linked client goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub host: Arc<str>,
    pub port: u16,
    pub pid: u32,
    pub secret: u32,
}

/// All clients' cancel keys, sharded so logins don't contend on one lock.
pub struct CancelRegistry {
    /// The records of the clients by their key's pid: the record holds the key and the linked server
    /// ([`ClientRecord::cancel_key`], [`ClientRecord::begin_cancel`]), where a slot of its own per client
    /// took 112 bytes of heap beside it.
    shards: [Mutex<FastMap<u32, Arc<ClientRecord>>>; SHARDS],
    next_pid: AtomicU32,
    /// Notified whenever a forwarded cancel ends, for a client waiting in [`CancelHandle::settle`] (one for
    /// all keys, each waiter checks its own: cancels are rare, and no client carries a notifier of its own).
    settled: Notify,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            // Start somewhere random so keys do not look like a counter from zero across restarts.
            next_pid: AtomicU32::new(rand::random::<u32>() | 1),
            settled: Notify::new(),
        }
    }
}

impl CancelRegistry {
    fn shard(&self, pid: u32) -> std::sync::MutexGuard<'_, FastMap<u32, Arc<ClientRecord>>> {
        self.shards[pid as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh key to `record`'s client; the key is forgotten when the returned handle drops.
    pub fn register(self: &Arc<Self>, record: &Arc<ClientRecord>) -> CancelHandle {
        loop {
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
            if pid == 0 {
                continue;
            }
            let mut shard = self.shard(pid);
            if shard.contains_key(&pid) {
                continue;
            }
            let secret = rand::random();
            record.set_cancel_key(pid, secret);
            shard.insert(pid, Arc::clone(record));
            return CancelHandle {
                registry: Arc::clone(self),
                pid,
                secret,
            };
        }
    }

    /// Handles a CancelRequest: forwards it if the key matches a client that is linked to a server.
    /// Returns whether a cancel was sent. While it is forwarded, the request connection `from` (when given)
    /// is listed among its target pool's clients, `waiting_cancel_req` until the connection to PostgreSQL is
    /// open and `active_cancel_req` from the moment the cancel is sent until PostgreSQL closes it (PgBouncer's
    /// states); a KILL_CLIENT of it, or a KILL of its database, abandons it.
    pub async fn forward(
        &self,
        pid: u32,
        secret: u32,
        timeout: Duration,
        from: Option<&CancelFrom<'_>>,
    ) -> bool {
        let Some(client) = self.shard(pid).get(&pid).cloned() else {
            return false;
        };
        let Some((_, key_secret)) = client.cancel_key() else {
            return false;
        };
        if !bool::from(key_secret.to_be_bytes().ct_eq(&secret.to_be_bytes())) {
            return false;
        }
        let Some(server) = client.begin_cancel() else {
            return false;
        };
        // Counted until this is done or dropped (a client_login_timeout or a shutdown can drop it midway):
        // the client's next unlink waits for it.
        let _in_flight = InFlight {
            client: &client,
            settled: &self.settled,
        };
        let Some(target) = server.cancel.as_ref() else {
            return false; // not counted: begin_cancel checks
        };
        // Listed under its target's pool, as its user's (the one the startup packet named).
        let listed = from.and_then(|f| {
            let pool = server.pool.upgrade()?;
            let user = client.user_name().map_or_else(|| Arc::from(""), Arc::clone);
            Some(f.list(&pool, &user))
        });
        let send = self.send_to_listed(target, timeout, listed.as_ref());
        let sent = match &listed {
            Some(l) => tokio::select! {
                r = send => r,
                () = l.record.until_killed() => Err(std::io::Error::other(
                    l.record.killed().unwrap_or("killed").to_owned(),
                )),
            },
            None => send.await,
        };
        drop(listed);
        if let Err(e) = &sent {
            tracing::warn!(
                "could not forward cancel request to {}:{}: {e}",
                target.host,
                target.port
            );
        }
        sent.is_ok()
    }
}

impl CancelRegistry {
    /// Sends a CancelRequest for `target` and waits until PostgreSQL has acted on it (it closes the
    /// connection once the backend is signalled).
    /// `timeout` (cancel_wait_timeout; zero means no limit of its own) bounds the whole attempt.
    pub async fn send_to(&self, target: &CancelTarget, timeout: Duration) -> std::io::Result<()> {
        self.send_to_listed(target, timeout, None).await
    }

    /// [`CancelRegistry::send_to`], moving `listed` to `active_cancel_req` once the cancel is sent.
    async fn send_to_listed(
        &self,
        target: &CancelTarget,
        timeout: Duration,
        listed: Option<&Registered<ClientRecord>>,
    ) -> std::io::Result<()> {
        let timeout = if timeout.is_zero() {
            CANCEL_SETTLE
        } else {
            timeout.min(CANCEL_SETTLE)
        };
        let sent = || {
            if let Some(l) = listed {
                l.record.set_cancel_phase(CancelPhase::Active);
            }
        };
        match tokio::time::timeout(timeout, send_cancel(target, sent)).await {
            Ok(res) => res,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "cancel_wait_timeout",
            )),
        }
    }
}

async fn send_cancel(target: &CancelTarget, sent: impl FnOnce()) -> std::io::Result<()> {
    let mut stream =
        tokio::time::timeout(CANCEL_SETTLE, Stream::connect(&target.host, target.port))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    let mut buf = BytesMut::with_capacity(16);
    startup::write_cancel(&mut buf, target.pid, target.secret);
    stream.write_all(&buf).await?;
    sent();
    // PostgreSQL closes the connection once it has signalled the backend; wait for that so the server is
    // not handed to another client before the signal landed.
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(CANCEL_SETTLE, stream.read(&mut sink)).await;
    Ok(())
}

/// The connection a cancel request came on, to list it while the cancel is forwarded.
#[derive(Debug, Clone, Copy)]
pub struct CancelFrom<'a> {
    /// The request's connection (its record, listed while the cancel is forwarded).
    pub record: &'a Arc<ClientRecord>,
    /// The process's lifecycle (a request listed once an immediate shutdown began is abandoned).
    pub lifecycle: &'a crate::state::Lifecycle,
}

impl CancelFrom<'_> {
    /// Lists the request among `pool`'s clients, as `user`'s, waiting to be forwarded; unlisted on drop.
    fn list(&self, pool: &Arc<Pool>, user: &Arc<str>) -> Registered<ClientRecord> {
        let record = self.record;
        // A cancel request names no database or user: it is listed as its target's.
        record.set_shared_names(Arc::clone(&pool.key.database), Arc::clone(user));
        record.list_as(Arc::clone(&pool.key.database), "");
        record.set_cancel_phase(CancelPhase::Waiting);
        Registered::client(
            Arc::clone(record),
            record.id,
            RegistryRef::Pool(Arc::clone(pool), |p: &Pool| &p.live_clients),
            self.lifecycle,
        )
    }
}

/// A cancel on its way to a client's server: ends it (and wakes whoever waits for it to settle) on drop.
struct InFlight<'a> {
    client: &'a ClientRecord,
    settled: &'a Notify,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.client.end_cancel();
        self.settled.notify_waiters();
    }
}

/// A registered client key; unregisters on drop.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pid: u32,
    secret: u32,
}

impl CancelHandle {
    /// The key: the pid and secret of the client's BackendKeyData.
    pub fn key(&self) -> (u32, u32) {
        (self.pid, self.secret)
    }

    /// Waits until no cancel request is on its way to the server `record`'s client just gave up (see
    /// [`ClientRecord::unlink`]), so that the server can safely go to someone else; bounded by
    /// `CANCEL_SETTLE`.
    pub async fn settle(&self, record: &ClientRecord) {
        let settled = &self.registry.settled;
        let wait = async {
            loop {
                let notified = settled.notified();
                if record.cancels_in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(CANCEL_SETTLE, wait).await;
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.shard(self.pid).remove(&self.pid);
    }
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelHandle({})", self.pid)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;
    use crate::conns::{ServerRecord, ServerSpec};
    use crate::net::Peer;

    fn client() -> Arc<ClientRecord> {
        Arc::new(ClientRecord::new(
            crate::conns::next_id(),
            Peer::Unix,
            None,
            0,
        ))
    }

    fn server(cancel: Option<CancelTarget>) -> Arc<ServerRecord> {
        ServerRecord::new(ServerSpec {
            id: crate::conns::next_id(),
            user: "u".into(),
            database: "d".into(),
            peer: Peer::Unix,
            port: 5432,
            local: None,
            remote_pid: 4242,
            epoch: 1,
            cancel,
            pool: Weak::new(),
        })
    }

    /// A client with a key, linked to a server on 127.0.0.1:`port` whose own key is `key`.
    fn linked_client(
        reg: &Arc<CancelRegistry>,
        port: u16,
        (pid, secret): (u32, u32),
    ) -> (Arc<ClientRecord>, CancelHandle) {
        let c = client();
        let h = reg.register(&c);
        c.link(&server(Some(CancelTarget {
            host: "127.0.0.1".into(),
            port,
            pid,
            secret,
        })));
        (c, h)
    }

    #[tokio::test]
    async fn keys_are_unique_and_forgotten_on_drop() {
        let reg = Arc::new(CancelRegistry::default());
        let (ca, cb) = (client(), client());
        let a = reg.register(&ca);
        let b = reg.register(&cb);
        assert_ne!(a.key().0, b.key().0);
        assert_eq!(ca.cancel_key(), Some(a.key()));
        let pid = a.key().0;
        drop(a);
        assert!(reg.shard(pid).get(&pid).is_none());
        assert!(
            !reg.forward(pid, 0, Duration::from_secs(1), None).await,
            "unknown key does nothing"
        );
    }

    #[tokio::test]
    async fn wrong_secret_or_unlinked_client_sends_nothing() {
        let reg = Arc::new(CancelRegistry::default());
        let c = client();
        let h = reg.register(&c);
        let (pid, secret) = h.key();
        assert!(
            !reg.forward(pid, secret.wrapping_add(1), Duration::from_secs(1), None)
                .await
        );
        assert!(
            !reg.forward(pid, secret, Duration::from_secs(1), None).await,
            "not linked: nothing to cancel"
        );
        // Linked to a server that gave no BackendKeyData: nothing to send, and nothing left counted.
        c.link(&server(None));
        assert!(!reg.forward(pid, secret, Duration::from_secs(1), None).await);
        assert_eq!(c.cancels_in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancel_dropped_on_its_way_is_no_longer_counted() {
        // A server that takes the cancel and never closes: the forward waits until it is dropped.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(s);
        });
        let reg = Arc::new(CancelRegistry::default());
        let (c, h) = linked_client(&reg, port, (1, 2));
        let (pid, secret) = h.key();
        let reg2 = Arc::clone(&reg);
        let fwd = tokio::spawn(async move {
            reg2.forward(pid, secret, Duration::from_secs(30), None)
                .await
        });
        while c.cancels_in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fwd.abort();
        assert!(fwd.await.is_err(), "aborted");
        assert_eq!(
            c.cancels_in_flight(),
            0,
            "a dropped cancel is not left counted"
        );
        assert!(!c.unlink(0));
    }

    #[tokio::test]
    async fn forward_reaches_the_linked_server_and_unlink_waits_for_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reg = Arc::new(CancelRegistry::default());
        let (c, h) = linked_client(&reg, port, (4242, 7));
        let (pid, secret) = h.key();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 16];
            s.read_exact(&mut buf).await.unwrap();
            // Hold the connection open a moment: unlink must wait for it to close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            buf
        });
        let reg2 = Arc::clone(&reg);
        let fwd = tokio::spawn(async move {
            reg2.forward(pid, secret, Duration::from_secs(5), None)
                .await
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let started = std::time::Instant::now();
        assert!(c.unlink(0), "a cancel is on its way");
        h.settle(&c).await;
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "unlink returned while the cancel was in flight"
        );
        assert!(fwd.await.unwrap());
        assert_eq!(c.cancels_in_flight(), 0);
        let buf = server.await.unwrap();
        let mut expect = BytesMut::new();
        startup::write_cancel(&mut expect, 4242, 7);
        assert_eq!(&buf[..], &expect[..]);
    }
}
