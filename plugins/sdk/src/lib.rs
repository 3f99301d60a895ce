//! Guest-side SDK for pgwarden plugins written in Rust.
//!
//! pgwarden runs its routing, query-policy and authentication plugins as sandboxed WebAssembly
//! components built against the WIT package `pgwarden:plugin@0.1.1` (`wit/plugin.wit`). This crate
//! holds the generated bindings for that package plus the small helpers every plugin needs, so a
//! plugin crate depends on this crate alone (not on `wit-bindgen`):
//!
//! - [`Config`]: the plugin's configuration table with typed getters and unknown-key detection;
//! - [`deny`] and [`sqlstate`]: building the [`types::Denial`] a hook refuses with;
//! - [`log!`](crate::log!) and [`log`](mod@log): writing to pgwarden's log;
//! - [`database`]: running queries through pgwarden (auth plugins), behind a trait that tests can fake;
//! - [`glob`]: `*`/`?` matching, as used in configuration values;
//! - [`State`]: keeping what `init` parsed for the hooks that follow;
//! - the hook traits in [`init`], [`router`], [`policy`] and [`auth`], and [`export!`](crate::export!).
//!
//! # Writing a plugin
//!
//! A plugin is a `cdylib` crate built with `cargo build --release --target wasm32-wasip2` (rustc emits
//! a component directly for that target). It implements [`init::Guest`] plus the trait of every hook
//! it provides on one type, and names that type and those hooks in [`export!`](crate::export!):
//!
//! ```
//! use pgwarden_plugin_sdk::policy::{Query, Verdict};
//! use pgwarden_plugin_sdk::types::SessionInfo;
//! use pgwarden_plugin_sdk::{Config, State, deny, sqlstate};
//!
//! /// What `init` read from the configuration.
//! struct Settings {
//!     forbidden: Vec<String>,
//! }
//!
//! static SETTINGS: State<Settings> = State::new();
//!
//! struct NoDrop;
//!
//! impl pgwarden_plugin_sdk::init::Guest for NoDrop {
//!     fn init(config: pgwarden_plugin_sdk::types::Config) -> Result<(), String> {
//!         let config = Config::new(config);
//!         config.reject_unknown(&["forbidden"])?;
//!         let forbidden = config.get_list("forbidden");
//!         let forbidden = if forbidden.is_empty() { vec!["DROP".to_string()] } else { forbidden };
//!         SETTINGS.set(Settings { forbidden });
//!         Ok(())
//!     }
//! }
//!
//! impl pgwarden_plugin_sdk::policy::Guest for NoDrop {
//!     fn check(_session: SessionInfo, query: Query) -> Verdict {
//!         let Some(settings) = SETTINGS.get() else {
//!             return Verdict::Deny(deny(sqlstate::INTERNAL_ERROR, "plugin not initialised"));
//!         };
//!         for statement in &query.statements {
//!             if settings.forbidden.iter().any(|c| c.eq_ignore_ascii_case(&statement.command)) {
//!                 pgwarden_plugin_sdk::log!(Info, "refused {}", statement.command);
//!                 let message = format!("{} is not allowed here", statement.command);
//!                 return Verdict::Deny(deny(sqlstate::INSUFFICIENT_PRIVILEGE, message));
//!             }
//!         }
//!         Verdict::Allow
//!     }
//! }
//!
//! // Exports `init` and `policy`. Equivalent: `pgwarden_plugin_sdk::policy::export!(NoDrop);`
//! pgwarden_plugin_sdk::export!(NoDrop: policy);
//! # fn main() {}
//! ```
//!
//! with a `Cargo.toml` of
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! pgwarden-plugin-sdk = { path = "../sdk" }
//! ```
//!
//! [`export!`](crate::export!) takes the type (a plain identifier, as wit-bindgen requires) and a
//! comma-separated, non-empty list of hooks among `router`, `policy`, `query_policy` and `auth`:
//! `pgwarden_plugin_sdk::export!(MyPlugin: router, policy);`. The per-hook shorthands
//! `router::export!(T)`, `policy::export!(T)`, `auth::export!(T)` and `host::export!(T)` (all three)
//! expand to the same. Invoke it once per plugin crate, at module level. On targets other than
//! wasm32 it only checks that the type implements the traits, so a plugin's unit tests build and
//! run natively (`cargo test` on the host target).
//!
//! Plugins run with panics set to abort (`panic = "abort"` in the release profile; a plugin crate
//! outside this workspace must set it too): a panic traps the instance and pgwarden applies the
//! hook's failure policy (by default: deny / refuse). Return errors wherever the input is at fault.
//!
//! # What a component imports
//!
//! `pgwarden:plugin/log` if it logs, `pgwarden:plugin/database` if it queries, the type-only
//! `pgwarden:plugin/types`, and, from Rust's std (panic messages and stdio), `wasi:io/{poll,error,
//! streams}` and `wasi:cli/{environment,exit,stdin,stdout,stderr,terminal-*}`. Using `std::fs`,
//! `std::net`, `std::time` or a randomly seeded `HashMap` would add filesystem, socket, clock or
//! random imports, which pgwarden does not grant: plugins avoid them (a `BTreeMap`, or a `Vec`,
//! does the job).

extern crate self as pgwarden_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod bindings;

mod config;
pub mod database;
mod denial;
pub mod glob;
pub mod log;
mod state;

pub use config::Config;
pub use denial::{deny, is_valid_sqlstate, sqlstate};
pub use state::State;

/// The types every hook shares (`pgwarden:plugin/types`).
pub mod types {
    pub use crate::bindings::base::pgwarden::plugin::types::{
        Config, Denial, PoolMode, SessionInfo,
    };
}

/// The `init` export every plugin has.
pub mod init {
    pub use crate::bindings::base::exports::pgwarden::plugin::init::Guest;
}

/// The `router` hook: where a connecting client goes.
pub mod router {
    pub use crate::bindings::router::exports::pgwarden::plugin::router::{Destination, Guest};

    /// Exports `init` and `router` for a type: `pgwarden_plugin_sdk::router::export!(MyPlugin);`.
    #[doc(inline)]
    pub use crate::__export_router as export;
}

/// The `policy` hook: whether a query may run.
pub mod policy {
    pub use crate::bindings::policy::exports::pgwarden::plugin::policy::{
        Guest, Protocol, Query, Statement, StatementKind, Verdict,
    };

    /// Exports `init` and `policy` for a type: `pgwarden_plugin_sdk::policy::export!(MyPlugin);`.
    #[doc(inline)]
    pub use crate::__export_policy as export;
}

/// The `query-policy` hook: whether a query may run, asked through handles. The same hook as
/// [`policy`], but [`Session`](query_policy::Session) and [`Query`](query_policy::Query) are read on
/// demand: a check that only asks [`Query::read_only`](query_policy::Query::read_only) costs a
/// fraction of a [`policy`] call, which copies every word of the query into the plugin.
///
/// ```
/// use pgwarden_plugin_sdk::query_policy::{Guest, Query, Session, Verdict};
/// use pgwarden_plugin_sdk::{deny, sqlstate};
///
/// struct ReadsOnly;
///
/// impl pgwarden_plugin_sdk::init::Guest for ReadsOnly {
///     fn init(_: pgwarden_plugin_sdk::types::Config) -> Result<(), String> {
///         Ok(())
///     }
/// }
///
/// impl Guest for ReadsOnly {
///     fn check(_session: &Session, query: &Query) -> Verdict {
///         if query.read_only() {
///             return Verdict::Allow;
///         }
///         let command = query.statements().into_iter().find(|s| !s.read_only).map(|s| s.command);
///         let message = format!("{} is not allowed here", command.unwrap_or_default());
///         Verdict::Deny(deny(sqlstate::READ_ONLY_SQL_TRANSACTION, message))
///     }
/// }
///
/// pgwarden_plugin_sdk::query_policy::export!(ReadsOnly);
/// # fn main() {}
/// ```
pub mod query_policy {
    pub use crate::bindings::query_policy::exports::pgwarden::plugin::query_policy::{
        Guest, Verdict,
    };
    pub use crate::bindings::query_policy::pgwarden::plugin::handles::{
        Protocol, Query, Session, Statement, StatementKind,
    };

    /// Exports `init` and `query-policy` for a type: `pgwarden_plugin_sdk::query_policy::export!(T);`.
    #[doc(inline)]
    pub use crate::__export_query_policy as export;
}

/// The `auth` hook: the secret of a user pgwarden does not know.
pub mod auth {
    pub use crate::bindings::auth::exports::pgwarden::plugin::auth::Guest;

    /// Exports `init` and `auth` for a type: `pgwarden_plugin_sdk::auth::export!(MyPlugin);`.
    #[doc(inline)]
    pub use crate::__export_auth as export;
}

/// Every hook at once (the WIT `host` world), for plugins that provide all three.
pub mod host {
    /// Exports `init`, `router`, `policy` and `auth`: `pgwarden_plugin_sdk::host::export!(MyPlugin);`.
    #[doc(inline)]
    pub use crate::__export_host as export;
}

/// Exports a plugin type as the component's `init` and the named hooks.
///
/// `export!(MyPlugin: router, policy)`: the hooks are any non-empty, comma-separated list of
/// `router`, `policy` (or `query_policy`) and `auth`; the type must implement [`init::Guest`] and each named hook's
/// `Guest` trait. See the crate documentation for a complete plugin.
#[macro_export]
macro_rules! export {
    ($ty:ident : $($hook:ident),+ $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::base::export!($ty with_types_in $crate::bindings::base);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn implements_init<T: $crate::init::Guest>() {}
            let _ = implements_init::<$ty>;
        };
        $( $crate::__export_hook!($ty $hook); )+
    };
}

/// One hook of [`export!`]: the wit-bindgen export on wasm32, a trait check elsewhere (exporting
/// symbols named like `pgwarden:plugin/init@0.1.0#init` is not possible in a native library, and
/// the check keeps native builds honest and the plugin type in use).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    ($ty:ident router) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::router::export!($ty with_types_in $crate::bindings::router);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn implements_router<T: $crate::router::Guest>() {}
            let _ = implements_router::<$ty>;
        };
    };
    ($ty:ident policy) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::policy::export!($ty with_types_in $crate::bindings::policy);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn implements_policy<T: $crate::policy::Guest>() {}
            let _ = implements_policy::<$ty>;
        };
    };
    ($ty:ident query_policy) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::query_policy::export!($ty with_types_in $crate::bindings::query_policy);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn implements_query_policy<T: $crate::query_policy::Guest>() {}
            let _ = implements_query_policy::<$ty>;
        };
    };
    ($ty:ident auth) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::auth::export!($ty with_types_in $crate::bindings::auth);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn implements_auth<T: $crate::auth::Guest>() {}
            let _ = implements_auth::<$ty>;
        };
    };
    ($ty:ident $other:ident) => {
        compile_error!(concat!(
            "unknown pgwarden hook `",
            stringify!($other),
            "`: expected router, policy, query_policy or auth"
        ));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_router {
    ($ty:ident) => {
        $crate::export!($ty: router);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_policy {
    ($ty:ident) => {
        $crate::export!($ty: policy);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_query_policy {
    ($ty:ident) => {
        $crate::export!($ty: query_policy);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_auth {
    ($ty:ident) => {
        $crate::export!($ty: auth);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_host {
    ($ty:ident) => {
        $crate::export!($ty: router, policy, auth);
    };
}
