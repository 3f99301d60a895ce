//! `/readyz`: whether this pooler should get new clients now. Not while shutting down or paused, not while
//! a pool fails its clients at once because its server login keeps failing, and not while a configured
//! server cannot be reached.
//!
//! Reaching a server is a TCP (or Unix socket) connect and close, with a short timeout, to every host of
//! every `[databases]` entry; PostgreSQL logs nothing for a connection that sends nothing. The answer is
//! kept for a second, so probes of any frequency cost at most one round of connects a second, and
//! concurrent probes share one round. (Checking the hosts also when pools exist, not only before the first
//! one: a pool whose last login succeeded says nothing about a server that went away since, and a pool
//! whose login failed would learn of the server's return only from a client's next attempt.)

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::state::State;

/// How long an answer about the servers is reused.
const CACHE: Duration = Duration::from_secs(1);
/// How long one connect may take: well under a probe's own timeout (Kubernetes: 1 s by default).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The servers' reachability, cached.
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// `Ok` when ready; otherwise the reason, one line.
    pub async fn check(&self, state: &State) -> Result<(), String> {
        if state.lifecycle.shutdown_mode().is_some() {
            return Err("shutting down".into());
        }
        if state.lifecycle.is_paused() {
            return Err("paused".into());
        }
        for pool in state.pools.all() {
            if let Err(e) = pool.check_fast_fail() {
                return Err(format!("pool {}: {e}", pool.key));
            }
        }
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = &*last
            && at.elapsed() < CACHE
        {
            return answer.clone();
        }
        let answer = reach_servers(state).await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// One server address of a database entry: a TCP host or a Unix socket directory, and the port.
type Target = (String, u16);

/// Connects to every configured server; the first entry (by name) none of whose hosts answers is the
/// reason.
async fn reach_servers(state: &State) -> Result<(), String> {
    let runtime = state.runtime();
    let config = &runtime.config;
    let default_dir = config
        .settings
        .unix_socket_dir
        .as_ref()
        .map_or_else(|| "/tmp".to_owned(), |d| d.display().to_string());
    let mut entries: Vec<(String, Vec<Target>)> = Vec::new();
    for db in config.databases.values().chain(config.fallback.iter()) {
        let hosts = if db.host.is_empty() {
            vec![default_dir.clone()]
        } else {
            db.host.clone()
        };
        entries.push((
            db.name.clone(),
            hosts.into_iter().map(|h| (h, db.port)).collect(),
        ));
    }
    let targets: BTreeSet<Target> = entries
        .iter()
        .flat_map(|(_, t)| t.iter().cloned())
        .collect();
    let mut probes = JoinSet::new();
    for target in targets {
        probes.spawn(async move {
            let result = reach(&target).await;
            (target, result)
        });
    }
    let mut failed = std::collections::HashMap::new();
    while let Some(done) = probes.join_next().await {
        if let Ok((target, Err(e))) = done {
            failed.insert(target, e);
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, targets) in &entries {
        if let Some(first) = targets.first()
            && targets.iter().all(|t| failed.contains_key(t))
        {
            let (host, port) = first;
            return Err(format!(
                "database {name}: cannot reach {}: {}",
                describe(host, *port),
                failed[first]
            ));
        }
    }
    Ok(())
}

async fn reach((host, port): &Target) -> Result<(), String> {
    let connect = async {
        if host.starts_with('/') {
            tokio::net::UnixStream::connect(crate::net::socket_path(Path::new(host), *port))
                .await
                .map(drop)
        } else {
            tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map(drop)
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} ms",
            CONNECT_TIMEOUT.as_millis()
        )),
    }
}

fn describe(host: &str, port: u16) -> String {
    if host.starts_with('/') {
        crate::net::socket_path(Path::new(host), port)
            .display()
            .to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
