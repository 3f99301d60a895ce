//! Listening sockets and the accept loop, and [`run`]: the pooler from bound sockets to a finished
//! shutdown. Tests bind port 0 and call `run` in-process.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

use crate::config::Settings;
use crate::net::{Keepalive, Stream};
use crate::pool::{KeyRef, PoolSettings};
use crate::state::{Runtime, ShutdownMode, State};

/// How long an immediate shutdown waits for sessions to write their goodbyes.
const GOODBYE: Duration = Duration::from_secs(2);

/// The sockets pgwarden accepts clients on, and the HTTP listener for operators.
#[derive(Debug)]
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    pub unix: Option<(UnixListener, SocketFile)>,
    /// `metrics_listen_addr` × `metrics_listen_port` (none unless configured): [`crate::metrics`].
    pub metrics: Vec<TcpListener>,
}

/// A Unix socket's file, removed when dropped (after the listener stops).
#[derive(Debug)]
pub struct SocketFile {
    pub path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Errors binding listeners name the address.
#[derive(Debug, thiserror::Error)]
#[error("could not listen on {addr}: {source}")]
pub struct BindError {
    pub addr: String,
    pub source: io::Error,
}

impl Listeners {
    /// Binds `listen_addr` × `listen_port` and the Unix socket in `unix_socket_dir`, as PgBouncer does, and
    /// `metrics_listen_addr` × `metrics_listen_port`.
    pub fn bind(settings: &Settings) -> Result<Self, BindError> {
        let port = settings.listen_port;
        let tcp = bind_all(&settings.listen_addr, port, settings.listen_backlog)?;
        let metrics = bind_all(
            &settings.metrics_listen_addr,
            settings.metrics_listen_port,
            settings.listen_backlog,
        )?;
        let unix = match &settings.unix_socket_dir {
            Some(dir) if !dir.as_os_str().is_empty() => {
                Some(bind_unix(dir, port, settings.unix_socket_mode)?)
            }
            _ => None,
        };
        if tcp.is_empty() && unix.is_none() {
            return Err(BindError {
                addr: "(nothing)".into(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither listen_addr nor unix_socket_dir is set",
                ),
            });
        }
        Ok(Self { tcp, unix, metrics })
    }

    /// TCP addresses actually bound (with the real port when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Addresses of the metrics listener actually bound.
    pub fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.metrics
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds every address of `listen` (`*`: all IPv4 and, where the host has it, IPv6) on `port`.
fn bind_all(listen: &[String], port: u16, backlog: u32) -> Result<Vec<TcpListener>, BindError> {
    let mut bound = Vec::new();
    for addr in tcp_addresses(listen, port)? {
        match bind_tcp(addr, backlog) {
            Ok(l) => bound.push(l),
            // `*` also tries IPv6; a host without IPv6 is fine.
            Err(e) if addr.is_ipv6() && listen.iter().any(|a| a == "*") => {
                tracing::debug!("not listening on {addr}: {e}");
            }
            Err(source) => {
                return Err(BindError {
                    addr: addr.to_string(),
                    source,
                });
            }
        }
    }
    Ok(bound)
}

fn tcp_addresses(listen: &[String], port: u16) -> Result<Vec<SocketAddr>, BindError> {
    let mut out = Vec::new();
    for a in listen {
        let a = a.trim();
        if a == "*" {
            out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
            out.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
            continue;
        }
        let resolved = (a, port).to_socket_addrs().map_err(|source| BindError {
            addr: format!("{a}:{port}"),
            source,
        })?;
        out.extend(resolved);
    }
    out.dedup();
    Ok(out)
}

fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

fn bind_unix(dir: &Path, port: u16, mode: u32) -> Result<(UnixListener, SocketFile), BindError> {
    let path = crate::net::socket_path(dir, port);
    let err = |source| BindError {
        addr: path.display().to_string(),
        source,
    };
    if path.exists() {
        // A live server answers on it; a stale file from a crash does not and is replaced.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another server is listening on this socket",
            )));
        }
        std::fs::remove_file(&path).map_err(err)?;
    }
    let listener = UnixListener::bind(&path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok((listener, SocketFile { path }))
}

/// Runs the pooler on bound listeners until a shutdown completes. Maintenance (idle and lifetime reaping,
/// min_pool_size, retries) runs alongside.
pub async fn run(listeners: Listeners, state: Arc<State>) {
    let lifecycle = &state.lifecycle;
    let mut tcp_accepts = Vec::new();
    for l in listeners.tcp {
        tcp_accepts.push(tokio::spawn(accept_tcp(l, Arc::clone(&state))));
    }
    // The Unix socket stays open through a draining shutdown, for the admin console only (as in PgBouncer):
    // logins to other databases are refused with "pooler is shutting down".
    let mut unix_accept = None;
    if let Some((listener, file)) = listeners.unix {
        unix_accept = Some((
            tokio::spawn(accept_unix(listener, Arc::clone(&state))),
            file,
        ));
    }
    let janitor = tokio::spawn(janitor(Arc::clone(&state)));
    crate::client::park::start(&state);
    let stats = tokio::spawn(crate::stats::log_periodically(Arc::clone(&state)));
    // Serves until the end, through a drain: /healthz stays 200 while clients are served, /readyz says 503.
    let metrics = tokio::spawn(crate::metrics::serve(listeners.metrics, Arc::clone(&state)));

    lifecycle.stop_accepting.cancelled().await;
    for a in tcp_accepts {
        let _ = a.await;
    }
    match lifecycle.shutdown_mode() {
        Some(ShutdownMode::WaitForClients) => {
            lifecycle.tracker.close();
            tokio::select! {
                // Every client left.
                () = lifecycle.tracker.wait() => tracing::info!("client connections dropped, exiting"),
                // Escalated to an immediate shutdown.
                () = lifecycle.terminate.cancelled() => {}
            }
        }
        Some(ShutdownMode::WaitForServers) => {
            // Every server released: none in use by a client (idle, opening or gone is fine).
            while state.pools.all().iter().any(|p| p.in_use() > 0)
                && !lifecycle.terminate.is_cancelled()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !lifecycle.terminate.is_cancelled() {
                tracing::info!("server connections dropped, exiting");
            }
        }
        _ => {}
    }
    if let Some((accept, file)) = unix_accept {
        accept.abort();
        let _ = accept.await;
        drop(file);
    }
    state.shutdown(ShutdownMode::Immediate);
    lifecycle.tracker.close();
    let _ = tokio::time::timeout(GOODBYE, lifecycle.tracker.wait()).await;
    janitor.abort();
    crate::client::park::close(&state);
    stats.abort();
    metrics.abort();
    for pool in state.pools.all() {
        pool.close_idle("shutting down");
    }
}

async fn accept_tcp(listener: TcpListener, state: Arc<State>) {
    loop {
        tokio::select! {
            // A client connects.
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let stream = Stream::Tcp(stream);
                    let settings = &state.runtime().config.settings;
                    let _ = stream.set_keepalive(&Keepalive {
                        enabled: settings.tcp_keepalive,
                        idle: secs(settings.tcp_keepidle),
                        interval: secs(settings.tcp_keepintvl),
                        count: (settings.tcp_keepcnt > 0).then_some(settings.tcp_keepcnt),
                        user_timeout: None,
                    });
                    state.lifecycle.tracker.spawn(crate::client::serve(Arc::clone(&state), stream));
                }
                Err(e) => accept_error(&e).await,
            },
            // Shutdown: stop accepting.
            () = state.lifecycle.stop_accepting.cancelled() => return,
        }
    }
}

async fn accept_unix(listener: UnixListener, state: Arc<State>) {
    loop {
        tokio::select! {
            // A client connects.
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    state.lifecycle.tracker.spawn(crate::client::serve(Arc::clone(&state), Stream::Unix(stream)));
                }
                Err(e) => accept_error(&e).await,
            },
            // Immediate shutdown: stop accepting (a draining one keeps the socket for the console).
            () = state.lifecycle.terminate.cancelled() => return,
        }
    }
}

/// Out of file descriptors and the like: log, back off a little, carry on.
async fn accept_error(e: &io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn secs(s: u32) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(u64::from(s)))
}

/// Three times a second: per-pool upkeep, and forgetting pools whose database entry is gone and that are empty.
async fn janitor(state: Arc<State>) {
    // A third of a second, as PgBouncer's maintenance: idle timeouts of 1 s act within about that.
    let mut tick = tokio::time::interval(Duration::from_millis(333));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let runtime = state.runtime();
        create_forced_user_pools(&state, &runtime);
        let autodb_idle = runtime.config.settings.autodb_idle_timeout;
        let pool_idle = runtime.config.settings.pool_idle_timeout;
        for pool in state.pools.all() {
            pool.maintain();
            let name = &*pool.key.database;
            // pool_idle_timeout: a pool with neither clients nor servers for that long is freed, except a
            // forced-user pool that keeps min_pool_size open (it would only be made again at once).
            if !pool_idle.is_zero() {
                let settings = pool.settings();
                let keeps_minimum = settings.forced_user && settings.min_pool_size > 0;
                if let Some(age) = pool
                    .empty_for()
                    .filter(|age| *age >= pool_idle && !keeps_minimum)
                    && state.pools.remove_if_empty(&pool.key)
                {
                    tracing::info!(
                        "cleaning up idle pool for user {} on db {name} because: pool idle timeout (age={}s)",
                        pool.key.user,
                        age.as_secs()
                    );
                    continue;
                }
            }
            let gone = runtime.config.database(name).is_none();
            // Pools made from the `*` entry are freed once unused for autodb_idle_timeout.
            let auto_expired = !gone
                && !runtime.config.databases.contains_key(name)
                && !autodb_idle.is_zero()
                && pool.unused_for().is_some_and(|d| d >= autodb_idle);
            if auto_expired {
                pool.close_idle("unused automatic database");
            }
            if gone || auto_expired {
                state.pools.remove_if_empty(&pool.key);
            }
        }
    }
}

/// A forced-user entry with a min_pool_size gets its pool before any client comes, so that the minimum is
/// kept open from the start (PgBouncer does the same). Other pools appear with their first client.
fn create_forced_user_pools(state: &State, runtime: &Runtime) {
    let config = &runtime.config;
    for db in config.databases.values() {
        let Some(user) = &db.user else { continue };
        if db.min_pool_size.unwrap_or(config.settings.min_pool_size) == 0 {
            continue;
        }
        state.pools.ensure(KeyRef::new(&db.name, user), || {
            PoolSettings::resolve(runtime, db, &db.name, user)
        });
    }
}
