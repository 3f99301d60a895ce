//! The set of pools, keyed by (database entry, pool user). Looked up once per client login, never per query.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use super::{Pool, PoolSettings, SharedLimit};
use crate::FastMap;
use crate::config::PoolMode;
use crate::params::Tracked;

/// Identifies a pool: the database entry clients asked for, the user the pool logs in as, and the pool
/// mode when a router plugin chose one other than the configured one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: Arc<str>,
    pub user: Arc<str>,
    pub mode: Option<PoolMode>,
}

impl PoolKey {
    pub fn new(database: &str, user: &str) -> Self {
        KeyRef::new(database, user).to_owned()
    }
}

/// A [`PoolKey`] of borrowed names: what a login looks its pool up by, so that finding an existing pool
/// copies neither name (two allocations a login, and their frees, when the key was built to be dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRef<'a> {
    pub database: &'a str,
    pub user: &'a str,
    pub mode: Option<PoolMode>,
}

impl<'a> KeyRef<'a> {
    pub fn new(database: &'a str, user: &'a str) -> Self {
        Self {
            database,
            user,
            mode: None,
        }
    }

    /// The pool for clients a router sent to `database` as `user` in `mode`.
    pub fn routed(database: &'a str, user: &'a str, mode: Option<PoolMode>) -> Self {
        Self {
            database,
            user,
            mode,
        }
    }

    fn to_owned(self) -> PoolKey {
        PoolKey {
            database: self.database.into(),
            user: self.user.into(),
            mode: self.mode,
        }
    }
}

/// What the registry's map is looked up by: a [`PoolKey`] or a [`KeyRef`], hashed and compared as the
/// latter (the standard map finds a stored key by any type it can lend as a reference, and a struct of
/// references can only be lent through a trait object).
trait AsKeyRef {
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for PoolKey {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            database: &self.database,
            user: &self.user,
            mode: self.mode,
        }
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn AsKeyRef + 'a> for PoolKey {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl std::hash::Hash for dyn AsKeyRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state);
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

/// Hashed as its [`KeyRef`], as [`std::borrow::Borrow`] requires of a key and what it lends.
impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state);
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

    pub fn get(&self, key: KeyRef<'_>) -> Option<Arc<Pool>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key as &dyn AsKeyRef)
            .cloned()
    }

    /// Makes sure the pool for `key` exists (created with `settings()` if not), without joining a client:
    /// for forced-user pools whose min_pool_size is kept open before any client comes.
    pub fn ensure(&self, key: KeyRef<'_>, settings: impl FnOnce() -> PoolSettings) -> Arc<Pool> {
        if let Some(pool) = self.get(key) {
            return pool;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = map.get(&key as &dyn AsKeyRef) {
            return Arc::clone(pool);
        }
        let key = key.to_owned();
        let pool = self.create(&key, settings);
        map.insert(key, Arc::clone(&pool));
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
    pub fn join(&self, key: KeyRef<'_>, settings: impl FnOnce() -> PoolSettings) -> Arc<Pool> {
        {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(pool) = map.get(&key as &dyn AsKeyRef) {
                pool.client_joined();
                return Arc::clone(pool);
            }
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = map.get(&key as &dyn AsKeyRef) {
            pool.client_joined();
            return Arc::clone(pool);
        }
        let key = key.to_owned();
        let pool = self.create(&key, settings);
        pool.client_joined();
        map.insert(key, Arc::clone(&pool));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_key_finds_the_pool_key_it_equals_and_no_other() {
        let mut map: FastMap<PoolKey, u32> = FastMap::default();
        map.insert(PoolKey::new("app", "alice"), 1);
        let routed = KeyRef::routed("app", "alice", Some(PoolMode::Session));
        map.insert(routed.to_owned(), 2);
        // Names built apart from the stored ones: found by value.
        let (db, user) = (String::from("app"), String::from("alice"));
        let find = |k: KeyRef<'_>| map.get(&k as &dyn AsKeyRef).copied();
        assert_eq!(find(KeyRef::new(&db, &user)), Some(1));
        assert_eq!(
            find(KeyRef::routed(&db, &user, Some(PoolMode::Session))),
            Some(2)
        );
        assert_eq!(
            find(KeyRef::routed(&db, &user, Some(PoolMode::Statement))),
            None
        );
        assert_eq!(find(KeyRef::new("app", "bob")), None);
        assert_eq!(find(KeyRef::new("alice", "app")), None);
        // The owned key still finds itself (the console's and the janitor's lookups).
        assert_eq!(map.get(&PoolKey::new("app", "alice")), Some(&1));
    }
}
