//! The one wasmtime engine of the process, its linker, and the epoch ticker that enforces call deadlines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::Host_;
use super::host::PluginState;

/// How often the epoch advances; a call's deadline is a whole number of ticks. Each tick wakes a thread
/// of the pooler's process: 5 ms keeps that to 200 wake-ups a second (at 1 ms they showed as 1% of the
/// pooler's CPU under load) while a 100 ms deadline still fires within 5%.
pub const TICK: Duration = Duration::from_millis(5);

/// The engine, the linker every plugin is instantiated with, and compiled components by content hash
/// (so a reload that leaves a plugin's file unchanged does not compile it again).
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// The on-disk compile cache, kept to read its hit and miss counters.
    cache: Option<wasmtime::Cache>,
    /// Components this engine compiled or loaded from the disk cache (memory-cache misses).
    compiles: AtomicU64,
    /// Compiles answered from memory (the same bytes loaded again: a reload, another plugin entry).
    memory_hits: AtomicU64,
    /// The epoch ticker starts with the first plugin: a pooler without plugins has no thread waking up
    /// every millisecond.
    ticker: std::sync::Once,
}

impl PluginEngine {
    /// Creates the engine. `cache_dir` (when set) keeps compiled components on disk between runs, which
    /// matters for large components (JavaScript, Python) that take seconds to compile.
    pub fn new(cache_dir: Option<&Path>) -> Result<Arc<Self>, String> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines: every call gets a budget of epoch ticks; a runaway guest traps when it is spent.
        config.epoch_interruption(true);
        // Plugins are called synchronously; the structures for concurrent component calls would only make
        // every call slower.
        config.concurrency_support(false);
        let cache = match cache_dir {
            Some(dir) => {
                let mut cache_config = wasmtime::CacheConfig::new();
                cache_config.with_directory(dir);
                let cache = wasmtime::Cache::new(cache_config)
                    .map_err(|e| format!("plugin cache {}: {e}", dir.display()))?;
                config.cache(Some(cache.clone()));
                Some(cache)
            }
            None => None,
        };
        let engine = Engine::new(&config)
            .map_err(|e| format!("cannot create the WebAssembly engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| e.to_string())?;
        super::wasi::add_sync_io(&mut linker).map_err(|e| format!("cannot link WASI I/O: {e}"))?;
        Host_::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            engine,
            linker,
            compiled: Mutex::default(),
            cache,
            compiles: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            ticker: std::sync::Once::new(),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// Compiles `bytes` (a component), or returns the component compiled earlier from the same bytes.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, String> {
        self.ticker.call_once(|| spawn_ticker(&self.engine));
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(bytes).into();
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
        {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let started = Instant::now();
        let disk_hits = self.cache.as_ref().map(wasmtime::Cache::cache_hits);
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| format!("not a valid component: {e:#}"))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        // Another compile running at the same time may move the counter too: this is for the log only.
        let from = match (disk_hits, &self.cache) {
            (Some(before), Some(c)) if c.cache_hits() > before => "loaded from the disk cache",
            (Some(_), _) => "compiled (disk cache miss)",
            _ => "compiled (no disk cache)",
        };
        tracing::info!(
            "plugin component of {} KiB {from} in {} ms",
            bytes.len() / 1024,
            started.elapsed().as_millis()
        );
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, component.clone());
        Ok(component)
    }
}

/// How a [`PluginEngine`] got its components so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Components built by this engine: compiled, or loaded from the disk cache.
    pub compiles: u64,
    /// Of those, how many the disk cache supplied (`plugin_cache_dir`).
    pub disk_hits: u64,
    /// Of those, how many were compiled and stored in the disk cache.
    pub disk_misses: u64,
    /// Loads answered from memory without compiling (the same component bytes seen before).
    pub memory_hits: u64,
}

impl PluginEngine {
    /// Counters of the compile caches (memory and disk), for logs, tests and the console.
    pub fn compile_stats(&self) -> CompileStats {
        CompileStats {
            compiles: self.compiles.load(Ordering::Relaxed),
            disk_hits: self.cache.as_ref().map_or(0, |c| c.cache_hits() as u64),
            disk_misses: self.cache.as_ref().map_or(0, |c| c.cache_misses() as u64),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
        }
    }
}

/// The default place for compiled plugins: `$XDG_CACHE_HOME/pgwarden` or `$HOME/.cache/pgwarden`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("pgwarden").join("plugins"))
}

/// A thread that advances the engine's epoch every tick; it holds only a weak reference, so it ends when
/// the engine is dropped.
fn spawn_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("pgwarden-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Without the ticker the epoch never advances, so no deadline would ever fire. Say so loudly.
        tracing::error!(
            "cannot start the plugin deadline thread: {e}; plugin calls will not be time-limited"
        );
    }
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}
