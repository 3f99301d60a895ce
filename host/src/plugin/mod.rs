//! Sandboxed WebAssembly plugins: routing, query policy, auth lookup.
//!
//! A plugin is a component built against `wit/` (`pgwarden:plugin@0.1.1`, or `0.1.0`). The host compiles every
//! configured plugin off the hot path when the configuration loads, validates its exports and runs its
//! `init` with its configuration table, and swaps the whole set in with the configuration generation.
//! Calls run on warm instances from a lock-free pool, each with a CPU deadline (epoch interruption) and a
//! memory cap; a failure is handled by the plugin's `on_error` (deny by default).
//!
//! Layout: `bindings` (the one `bindgen!` site), `engine` (engine, linker, epoch ticker, compile cache),
//! `host` (store data and the host side of the imports), `instance` (a loaded plugin and its calls),
//! `set` (one generation of plugins), `builtin` (plugins shipped in the binary), `convert` (host data to
//! WIT records).

pub mod bindings;
pub mod builtin;
pub mod convert;
mod engine;
mod host;
mod instance;
mod set;
mod wasi;

pub use engine::{CompileStats, PluginEngine, default_cache_dir};
pub use host::DatabaseAccess;
pub use instance::{CallError, Plugin, PluginStats};
pub use set::{LoadError, PluginSet};
