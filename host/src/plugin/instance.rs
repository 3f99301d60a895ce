//! A loaded plugin: its pre-instantiated component, a pool of warm instances, calls with a deadline and
//! a memory cap, and its counters.
//!
//! Instantiating costs tens of microseconds, so instances are reused: a call takes one from the pool
//! (or makes one), and gives it back unless the call trapped (a trapped instance's state cannot be
//! trusted, so it is dropped). The pool is a stack: a call gets the instance returned last, most likely
//! by the same thread a moment ago, whose memory is still in that core's cache (a queue would hand out
//! the coldest one). Its mutex is held for a push or a pop only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{InstancePre, Resource};
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use super::bindings::exports::pgwarden::plugin::{auth, init, policy, query_policy, router};
use super::convert::{self, QueryInput, SessionInfo};
use super::engine::{PluginEngine, TICK};
use super::host::{CallClock, PluginState};
use crate::config::{Hook, PluginSpec};

/// Warm instances kept per plugin; more are made when needed and dropped when the pool is full.
const POOL: usize = 16;

/// The warm instances are kept in this many shards, [`POOL`] / `SHARDS` each: a thread takes from and gives
/// back to a shard of its own, so the instance a worker used last (its linear memory and store still in
/// that CPU's cache) is the one it uses next, where one shared list handed it to whichever worker came.
const SHARDS: usize = 4;

/// The calling thread's shard: threads are numbered in the order they first call a plugin.
fn my_shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Epoch ticks in `d`, at least one.
fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() / TICK.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Why a plugin call did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("plugin \"{plugin}\" ran out of time ({limit:?})")]
    Timeout { plugin: String, limit: Duration },
    #[error("plugin \"{plugin}\" failed: {message}")]
    Trap { plugin: String, message: String },
}

/// Per-plugin counters (for the console and metrics).
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub allows: AtomicU64,
    pub denials: AtomicU64,
    pub errors: AtomicU64,
    /// Total time spent in calls, nanoseconds.
    pub nanos: AtomicU64,
}

struct Instance {
    store: Store<PluginState>,
    router: Option<router::Guest>,
    policy: Option<policy::Guest>,
    query_policy: Option<query_policy::Guest>,
    auth: Option<auth::Guest>,
}

/// Export indices, resolved once per component.
struct Indices {
    init: init::GuestIndices,
    router: Option<router::GuestIndices>,
    policy: Option<policy::GuestIndices>,
    query_policy: Option<query_policy::GuestIndices>,
    auth: Option<auth::GuestIndices>,
}

pub struct Plugin {
    pub spec: PluginSpec,
    /// The hooks this plugin serves (configured, or every hook its component exports).
    pub hooks: Vec<Hook>,
    pub stats: PluginStats,
    /// SHA-256 of the component bytes: a reload with the same spec and bytes keeps this plugin as is.
    pub digest: [u8; 32],
    engine: Arc<PluginEngine>,
    pre: InstancePre<PluginState>,
    indices: Indices,
    name: Arc<str>,
    /// Warm instances by shard (see [`SHARDS`]).
    idle: [Mutex<Vec<Instance>>; SHARDS],
}

impl Plugin {
    /// Validates a compiled component against the ABI and the spec, and initialises a first instance with
    /// the plugin's configuration (so a bad configuration fails the load, not the first query).
    pub fn load(
        engine: &Arc<PluginEngine>,
        spec: &PluginSpec,
        bytes: &[u8],
    ) -> Result<Self, String> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
        let component = engine.compile(bytes)?;
        let pre = engine.linker().instantiate_pre(&component).map_err(|e| {
            format!("its imports are not what pgwarden:plugin@0.1.1 grants (no filesystem, network or clock): {e:#}")
        })?;
        let init = init::GuestIndices::new(&pre).map_err(|_| {
            "it does not export pgwarden:plugin/init@0.1 (built against another ABI version?)"
                .to_owned()
        })?;
        let indices = Indices {
            init,
            router: router::GuestIndices::new(&pre).ok(),
            policy: policy::GuestIndices::new(&pre).ok(),
            query_policy: query_policy::GuestIndices::new(&pre).ok(),
            auth: auth::GuestIndices::new(&pre).ok(),
        };
        let exported: Vec<Hook> = [
            (Hook::Router, indices.router.is_some()),
            (
                Hook::Policy,
                indices.policy.is_some() || indices.query_policy.is_some(),
            ),
            (Hook::Auth, indices.auth.is_some()),
        ]
        .into_iter()
        .filter_map(|(h, present)| present.then_some(h))
        .collect();
        let hooks = match &spec.hooks {
            None if exported.is_empty() => {
                return Err("it exports none of the router, policy or auth hooks".into());
            }
            None => exported,
            Some(wanted) => {
                if let Some(missing) = wanted.iter().find(|h| !exported.contains(h)) {
                    return Err(format!(
                        "hooks = {} but it does not export pgwarden:plugin/{}@0.1",
                        missing.as_str(),
                        missing.as_str()
                    ));
                }
                wanted.clone()
            }
        };
        let plugin = Self {
            spec: spec.clone(),
            hooks,
            stats: PluginStats::default(),
            digest,
            engine: Arc::clone(engine),
            pre,
            indices,
            name: spec.name.as_str().into(),
            idle: Default::default(),
        };
        let first = plugin.new_instance().map_err(|e| e.to_string())?;
        plugin.give_back(first);
        Ok(plugin)
    }

    pub fn serves(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn deadline_ticks(&self) -> u64 {
        ticks(self.spec.timeout)
    }

    /// A fresh instance, initialised with the plugin's configuration.
    fn new_instance(&self) -> Result<Instance, CallError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.spec.memory_limit).unwrap_or(usize::MAX))
            .build();
        let mut store = Store::new(
            self.engine.engine(),
            PluginState::new(Arc::clone(&self.name), limits),
        );
        store.limiter(|s| &mut s.limits);
        // When the deadline fires, time the call spent waiting in the database import is given back.
        store.epoch_deadline_callback(|cx| match cx.data().clock.left() {
            Some(left) => Ok(UpdateDeadline::Continue(ticks(left))),
            None => Err(Trap::Interrupt.into()),
        });
        store.data_mut().clock = CallClock::start(self.spec.timeout);
        store.set_epoch_deadline(self.deadline_ticks());
        let result = (|| {
            let instance = self.pre.instantiate(&mut store)?;
            let init = self.indices.init.load(&mut store, &instance)?;
            let ix = &self.indices;
            let router = ix
                .router
                .as_ref()
                .map(|i| i.load(&mut store, &instance))
                .transpose()?;
            // A component exporting both policy hooks is called through `query-policy`.
            let query_policy = ix
                .query_policy
                .as_ref()
                .map(|i| i.load(&mut store, &instance))
                .transpose()?;
            let policy = match query_policy {
                Some(_) => None,
                None => ix
                    .policy
                    .as_ref()
                    .map(|i| i.load(&mut store, &instance))
                    .transpose()?,
            };
            let auth = ix
                .auth
                .as_ref()
                .map(|i| i.load(&mut store, &instance))
                .transpose()?;
            let verdict = init.call_init(&mut store, &self.spec.config)?;
            let instance = Instance {
                store,
                router,
                policy,
                query_policy,
                auth,
            };
            Ok::<_, wasmtime::Error>((instance, verdict))
        })();
        match result {
            Ok((instance, Ok(()))) => Ok(instance),
            Ok((_, Err(message))) => Err(CallError::Trap {
                plugin: self.name.to_string(),
                message: format!("its init refused the configuration: {message}"),
            }),
            Err(e) => Err(self.classify(&e)),
        }
    }

    /// Runs `f` on a warm instance within the deadline; an instance that trapped is not reused.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let mine = my_shard();
        // Its own shard first, then the others' (a warm instance elsewhere beats making one).
        let popped = (0..SHARDS).find_map(|k| {
            self.idle[(mine + k) % SHARDS]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
        });
        let mut instance = match popped {
            Some(i) => i,
            None => self.new_instance().inspect_err(|_| {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            })?,
        };
        let started = Instant::now();
        instance.store.data_mut().clock = CallClock::started_at(self.spec.timeout, started);
        instance.store.set_epoch_deadline(self.deadline_ticks());
        let result = f(&mut instance);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.nanos.fetch_add(nanos, Ordering::Relaxed);
        match result {
            Ok(value) => {
                self.give_back(instance);
                Ok(value)
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(self.classify(&e))
            }
        }
    }

    /// Returns a healthy instance to the pool; one more than the pool holds is dropped (outside the lock:
    /// dropping a store frees its memory).
    fn give_back(&self, instance: Instance) {
        let extra = {
            let mut idle = self.idle[my_shard()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if idle.len() < POOL / SHARDS {
                idle.push(instance);
                None
            } else {
                Some(instance)
            }
        };
        drop(extra);
    }

    fn classify(&self, e: &wasmtime::Error) -> CallError {
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallError::Timeout {
                plugin: self.name.to_string(),
                limit: self.spec.timeout,
            };
        }
        let message = match e.downcast_ref::<Trap>() {
            Some(Trap::UnreachableCodeReached) => {
                "it trapped (a panic, or it ran out of memory)".to_owned()
            }
            Some(trap) => format!("it trapped: {trap}"),
            None => format!("{e:#}"),
        };
        CallError::Trap {
            plugin: self.name.to_string(),
            message,
        }
    }

    pub fn route(
        &self,
        session: &router::SessionInfo,
    ) -> Result<Result<router::Destination, router::Denial>, CallError> {
        self.call(|i| match &i.router {
            Some(g) => g.call_route(&mut i.store, session),
            None => Err(wasmtime::format_err!("no router export")),
        })
    }

    /// Checks one query. `record` is the query as a `policy` plugin's record: built here on first use
    /// and kept, so that the policy plugins of one check share it; a `query-policy` plugin never needs
    /// it. The session is lent to a `query-policy` call and is back in `session` when this returns.
    pub fn check(
        &self,
        session: &mut SessionInfo,
        query: &QueryInput<'_>,
        record: &mut Option<policy::Query>,
    ) -> Result<policy::Verdict, CallError> {
        let verdict = self.call(|i| {
            if let Some(g) = &i.query_policy {
                let input = &mut i.store.data_mut().input;
                input.set_query(query);
                input.session = Some(std::mem::replace(session, convert::empty_session_info()));
                // One session and one query per call: the handles need no table entry.
                let result = g.call_check(
                    &mut i.store,
                    Resource::new_borrow(0),
                    Resource::new_borrow(0),
                );
                if let Some(back) = i.store.data_mut().input.session.take() {
                    *session = back;
                }
                return result.map(|v| match v {
                    query_policy::Verdict::Allow => policy::Verdict::Allow,
                    query_policy::Verdict::Deny(d) => policy::Verdict::Deny(d),
                });
            }
            match &i.policy {
                Some(g) => {
                    let record = record.get_or_insert_with(|| convert::query(query));
                    g.call_check(&mut i.store, session, record)
                }
                None => Err(wasmtime::format_err!("no policy export")),
            }
        })?;
        let counter = match verdict {
            policy::Verdict::Allow => &self.stats.allows,
            policy::Verdict::Deny(_) => &self.stats.denials,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(verdict)
    }

    /// Looks a user up, with `db` granted to the plugin's `database` import for the duration of the call.
    /// May block (the import runs queries): call it from a blocking thread.
    pub fn lookup(
        &self,
        user: &str,
        database: &str,
        db: Arc<dyn super::host::DatabaseAccess>,
    ) -> Result<Result<Option<String>, String>, CallError> {
        self.call(|i| {
            i.store.data_mut().database = Some(db);
            let result = match &i.auth {
                Some(g) => g.call_lookup(&mut i.store, user, database),
                None => Err(wasmtime::format_err!("no auth export")),
            };
            i.store.data_mut().database = None;
            result
        })
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}
