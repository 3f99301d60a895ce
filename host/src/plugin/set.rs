//! One generation of plugins: everything the configuration lists, loaded and validated, in the order they
//! run. Swapped whole on reload together with the rest of the configuration.

use std::sync::Arc;

use super::builtin;
use super::engine::PluginEngine;
use super::instance::Plugin;
use crate::config::{Hook, PluginSource, PluginSpec};
use crate::metrics::ErrorCounts;

/// The plugins of one configuration generation.
#[derive(Debug, Default)]
pub struct PluginSet {
    plugins: Vec<Arc<Plugin>>,
    /// Where the hooks count their refusals (policy denials, router refusals): handed from each generation
    /// to the next, and shared with the [`crate::State`], so a reload never resets them.
    errors: Arc<ErrorCounts>,
}

/// A plugin that could not be loaded: which one, where it was configured, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: plugin \"{name}\" ({source_desc}): {message}")]
pub struct LoadError {
    pub name: String,
    pub origin: String,
    pub source_desc: String,
    pub message: String,
}

impl PluginSet {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads every plugin of `specs`, reusing the plugins of `previous` whose spec and component bytes did
    /// not change (their warm instances and counters carry over). Compiling may take seconds: call this off
    /// the async runtime. Any failure fails the whole set, so a reload keeps the running generation.
    pub fn load(
        engine: &Arc<PluginEngine>,
        specs: &[PluginSpec],
        previous: Option<&PluginSet>,
    ) -> Result<Self, LoadError> {
        let mut plugins = Vec::with_capacity(specs.len());
        for spec in specs {
            let fail = |message: String| LoadError {
                name: spec.name.clone(),
                origin: spec.origin(),
                source_desc: spec.source.to_string(),
                message,
            };
            let bytes = read_source(&spec.source).map_err(fail)?;
            let digest: [u8; 32] = {
                use sha2::Digest;
                sha2::Sha256::digest(&bytes).into()
            };
            let reused = previous
                .and_then(|p| {
                    p.plugins
                        .iter()
                        .find(|old| old.spec == *spec && old.digest == digest)
                })
                .cloned();
            let plugin = match reused {
                Some(p) => p,
                None => Arc::new(Plugin::load(engine, spec, &bytes).map_err(fail)?),
            };
            plugins.push(plugin);
        }
        let errors = previous.map(|p| Arc::clone(&p.errors)).unwrap_or_default();
        Ok(Self { plugins, errors })
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    pub fn all(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// The error counters this generation's hooks count refusals in.
    pub fn errors(&self) -> &Arc<ErrorCounts> {
        &self.errors
    }

    /// The plugins serving `hook` for clients of database alias `database`, in order.
    pub fn for_hook<'a>(
        &'a self,
        hook: Hook,
        database: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Plugin>> + 'a {
        self.plugins
            .iter()
            .filter(move |p| p.serves(hook) && p.spec.applies_to(database))
    }

    /// Whether any policy plugin applies to `database` (so queries there need a summary and a check).
    pub fn has_policy(&self, database: &str) -> bool {
        self.for_hook(Hook::Policy, database).next().is_some()
    }

    /// Startup parameters the plugins in scope add to server connections of `database`.
    pub fn server_parameters(&self, database: &str) -> Vec<(String, String)> {
        self.plugins
            .iter()
            .filter(|p| p.spec.applies_to(database))
            .flat_map(|p| p.spec.server_parameters.iter().cloned())
            .collect()
    }
}

fn read_source(source: &PluginSource) -> Result<Vec<u8>, String> {
    match source {
        PluginSource::Builtin(name) => builtin::bytes(name).map(<[u8]>::to_vec).ok_or_else(|| {
            format!(
                "no built-in plugin named \"{name}\" (built in: {})",
                builtin::names().join(", ")
            )
        }),
        PluginSource::File(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
    }
}
