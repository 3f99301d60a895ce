//! Reload (SIGHUP, and the console's RELOAD): re-read the config file and `auth_file`, swap the new
//! generation in atomically, re-resolve every pool. An invalid file changes nothing.

use std::sync::Arc;

use crate::config::{self, ConfigError};
use crate::plugin::{LoadError, PluginSet};
use crate::pool::PoolSettings;
use crate::state::{Runtime, State};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    Plugin(LoadError),
}

/// Reloads the configuration the process was started with, and its plugins. Both are validated (plugins
/// compiled and initialised) before anything is swapped; on error the running generation stays and the
/// error is logged and returned.
pub async fn reload(state: &Arc<State>) -> Result<(), ReloadError> {
    // Log rotation: whatever the new file says, the logfile is reopened (a renamed one stops growing).
    if let Some(logs) = state.logs.get() {
        logs.reopen();
    }
    let old = state.runtime();
    let path = old.config.path.clone();
    let engine = Arc::clone(&state.plugin_engine);
    let previous = Arc::clone(&old.plugins);
    let loaded = tokio::task::spawn_blocking(move || {
        let loaded = config::load(&path).map_err(ReloadError::Config)?;
        let plugins = PluginSet::load(&engine, &loaded.config.plugins, Some(&previous))
            .map_err(ReloadError::Plugin)?;
        Ok((loaded, plugins))
    })
    .await
    .unwrap_or_else(|join| {
        Err(ReloadError::Config(ConfigError {
            diagnostics: vec![config::Diagnostic {
                file: old.config.path.clone(),
                line: None,
                key: None,
                message: format!("reload task failed: {join}"),
            }],
        }))
    });
    let (loaded, plugins) = match loaded {
        Ok(l) => l,
        Err(e) => {
            match &e {
                ReloadError::Config(c) => {
                    for d in &c.diagnostics {
                        tracing::error!("reload failed, keeping the running configuration: {d}");
                    }
                }
                ReloadError::Plugin(p) => {
                    tracing::error!("reload failed, keeping the running configuration: {p}");
                }
            }
            return Err(e);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    warn_fixed_settings(&old.config.settings, &loaded.config.settings);
    let runtime = Arc::new(Runtime::new(
        loaded.config,
        Arc::new(plugins),
        state.next_generation(),
    ));
    state.runtime.store(Arc::clone(&runtime));
    apply(state, &runtime);
    if let Some(logs) = state.logs.get() {
        logs.apply(&runtime.config.settings);
    }
    tracing::info!("configuration reloaded (generation {})", runtime.generation);
    Ok(())
}

/// Swaps in `config` (the console's `SET`, which changes one setting), then brings every pool in line, as a
/// reload does. The running plugins are kept unless the setting changed what they are built from (auth_user
/// and friends configure the automatic auth-query plugin): then the new set is loaded first, and an error
/// changes nothing.
pub async fn install_config(state: &State, config: config::Config) -> Result<(), ReloadError> {
    let old = state.runtime();
    let plugins = if config.plugins == old.config.plugins {
        Arc::clone(&old.plugins)
    } else {
        let engine = Arc::clone(&state.plugin_engine);
        let previous = Arc::clone(&old.plugins);
        let specs = config.plugins.clone();
        let loaded =
            tokio::task::spawn_blocking(move || PluginSet::load(&engine, &specs, Some(&previous)))
                .await
                .map_err(|join| {
                    ReloadError::Config(ConfigError {
                        diagnostics: vec![config::Diagnostic {
                            file: old.config.path.clone(),
                            line: None,
                            key: None,
                            message: format!("plugin load task failed: {join}"),
                        }],
                    })
                })?
                .map_err(ReloadError::Plugin)?;
        Arc::new(loaded)
    };
    let runtime = Arc::new(Runtime::new(config, plugins, state.next_generation()));
    state.runtime.store(Arc::clone(&runtime));
    apply(state, &runtime);
    if let Some(logs) = state.logs.get() {
        logs.apply(&runtime.config.settings);
    }
    tracing::info!("configuration changed (generation {})", runtime.generation);
    Ok(())
}

/// Brings every pool in line with `runtime`. Pools whose database entry disappeared keep their last
/// settings for the clients still on them and are forgotten once empty.
pub fn apply(state: &State, runtime: &Runtime) {
    for pool in state.pools.all() {
        if let Some(db) = runtime.config.database(&pool.key.database) {
            let mut settings = PoolSettings::resolve(runtime, &db, &db.name, &pool.key.user);
            if let Some(mode) = pool.key.mode {
                settings.mode = mode;
            }
            pool.update_settings(settings);
        }
    }
}

/// Settings PgBouncer only reads at start: say that a change needs a restart rather than ignore it silently.
fn warn_fixed_settings(old: &config::Settings, new: &config::Settings) {
    let changed = [
        ("listen_addr", old.listen_addr != new.listen_addr),
        ("listen_port", old.listen_port != new.listen_port),
        (
            "unix_socket_dir",
            old.unix_socket_dir != new.unix_socket_dir,
        ),
        (
            "unix_socket_mode",
            old.unix_socket_mode != new.unix_socket_mode,
        ),
        ("listen_backlog", old.listen_backlog != new.listen_backlog),
        (
            "metrics_listen_addr",
            old.metrics_listen_addr != new.metrics_listen_addr,
        ),
        (
            "metrics_listen_port",
            old.metrics_listen_port != new.metrics_listen_port,
        ),
        ("pidfile", old.pidfile != new.pidfile),
        ("user", old.user != new.user),
        (
            "track_extra_parameters",
            old.track_extra_parameters != new.track_extra_parameters,
        ),
    ];
    for (key, did) in changed {
        if did {
            debug_assert!(!config::is_reloadable(key));
            tracing::warn!("{key} changed; the new value takes effect only after a restart");
        }
    }
}
