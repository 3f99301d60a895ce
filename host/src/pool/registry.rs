//! The set of pools, keyed by (database entry, pool user). Looked up once per client login, never per query.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use super::{Pool, PoolSettings, SharedLimit};
use crate::FastMap;
use crate::config::PoolMode;
use crate::params::Tracked;

/// Identifies a pool: the database entry clients asked for, the user the pool logs in as, and the pool
/// mode when a router plugin chose one other than the configured one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: Arc<str>,
    pub user: Arc<str>,
    pub mode: Option<PoolMode>,
}

impl PoolKey {
    pub fn new(database: &str, user: &str) -> Self {
        Self {
            database: database.into(),
            user: user.into(),
            mode: None,
        }
    }

    /// The pool for clients a router sent to `database` as `user` in `mode`.
    pub fn routed(database: &str, user: &str, mode: Option<PoolMode>) -> Self {
        Self {
            mode,
            ..Self::new(database, user)
        }
    }
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.database, self.user)?;
        if let Some(mode) = self.mode {
            write!(f, " ({mode})")?;
        }
        Ok(())
    }
}

pub struct Pools {
    map: RwLock<FastMap<PoolKey, Arc<Pool>>>,
    db_limits: Mutex<FastMap<Arc<str>, Arc<SharedLimit>>>,
    user_limits: Mutex<FastMap<Arc<str>, Arc<SharedLimit>>>,
    /// Databases paused on their own (the console's `PAUSE db`); their pools, present and future, hand
    /// out no server until `RESUME db`.
    paused_databases: Mutex<HashSet<String>>,
    tracked: Arc<Tracked>,
}

impl Pools {
    pub fn new(tracked: Arc<Tracked>) -> Self {
        Self {
            map: RwLock::default(),
            db_limits: Mutex::default(),
            user_limits: Mutex::default(),
            paused_databases: Mutex::default(),
            tracked,
        }
    }

    pub fn get(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Makes sure the pool for `key` exists (created with `settings()` if not), without joining a client:
    /// for forced-user pools whose min_pool_size is kept open before any client comes.
    pub fn ensure(&self, key: &PoolKey, settings: impl FnOnce() -> PoolSettings) -> Arc<Pool> {
        if let Some(pool) = self.get(key) {
            return pool;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = map.get(key) {
            return Arc::clone(pool);
        }
        let pool = self.create(key, settings);
        map.insert(key.clone(), Arc::clone(&pool));
        pool
    }

    fn create(&self, key: &PoolKey, settings: impl FnOnce() -> PoolSettings) -> Arc<Pool> {
        let db_limit = shared(&self.db_limits, &key.database);
        let user_limit = shared(&self.user_limits, &key.user);
        let tracked = Arc::clone(&self.tracked);
        let pool = Pool::new(key.clone(), settings(), db_limit, user_limit, tracked);
        if self.is_database_paused(&key.database) {
            pool.set_paused(true);
        }
        pool
    }

    /// Whether `PAUSE db` holds `database`.
    pub fn is_database_paused(&self, database: &str) -> bool {
        self.paused_databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(database)
    }

    /// Marks `database` paused or not; false if it already was in that state. The caller applies it to
    /// the pools (a global PAUSE may hold them too).
    pub(crate) fn mark_database_paused(&self, database: &str, paused: bool) -> bool {
        let mut set = self
            .paused_databases
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if paused {
            set.insert(database.to_owned())
        } else {
            set.remove(database)
        }
    }

    /// Joins a client to the pool for `key`, creating the pool with `settings()` if it does not
    /// exist yet. The join happens under the registry lock, so the janitor can never forget a pool a
    /// client is about to use. Pair with [`Pool::client_left`].
    pub fn join(&self, key: &PoolKey, settings: impl FnOnce() -> PoolSettings) -> Arc<Pool> {
        {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(pool) = map.get(key) {
                pool.client_joined();
                return Arc::clone(pool);
            }
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = map.get(key) {
            pool.client_joined();
            return Arc::clone(pool);
        }
        let pool = self.create(key, settings);
        pool.client_joined();
        map.insert(key.clone(), Arc::clone(&pool));
        pool
    }

    /// A snapshot of every pool, sorted by key (the order the console lists them in).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<_> = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        pools.sort_by(|a, b| a.key.cmp(&b.key));
        pools
    }

    /// Forgets a pool that has no clients and no connections (its database entry is gone, or it was an
    /// automatic `*` pool idle past autodb_idle_timeout).
    pub fn remove_if_empty(&self, key: &PoolKey) -> bool {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let empty = map.get(key).is_some_and(|p| {
            p.clients.load(std::sync::atomic::Ordering::Acquire) == 0 && p.counts().0 == 0
        });
        if empty {
            map.remove(key);
        }
        empty
    }
}

fn shared(map: &Mutex<FastMap<Arc<str>, Arc<SharedLimit>>>, name: &Arc<str>) -> Arc<SharedLimit> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(map.entry(Arc::clone(name)).or_default())
}
