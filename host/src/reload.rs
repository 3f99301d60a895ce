//! Reload (SIGHUP, and later the console's RELOAD): re-read the config file and `auth_file`, swap the new
//! generation in atomically, re-resolve every pool. An invalid file changes nothing.

use std::sync::Arc;

use crate::config::{self, ConfigError};
use crate::pool::PoolSettings;
use crate::state::{Runtime, State};

/// Reloads the configuration the process was started with. On error the old configuration stays and
/// the error (every diagnostic) is logged and returned.
pub async fn reload(state: &Arc<State>) -> Result<(), ConfigError> {
    let old = state.runtime();
    let path = old.config.path.clone();
    let loaded = match tokio::task::spawn_blocking(move || config::load(&path)).await {
        Ok(res) => res,
        Err(join) => Err(ConfigError {
            diagnostics: vec![config::Diagnostic {
                file: old.config.path.clone(),
                line: None,
                key: None,
                message: format!("reload task failed: {join}"),
            }],
        }),
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            for d in &e.diagnostics {
                tracing::error!("reload failed, keeping the running configuration: {d}");
            }
            return Err(e);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    warn_fixed_settings(&old.config.settings, &loaded.config.settings);
    let runtime = Arc::new(Runtime::new(loaded.config, state.next_generation()));
    state.runtime.store(Arc::clone(&runtime));
    apply(state, &runtime);
    tracing::info!("configuration reloaded (generation {})", runtime.generation);
    Ok(())
}

/// Brings every pool in line with `runtime`. Pools whose database entry disappeared keep their last
/// settings for the clients still on them and are forgotten once empty.
pub fn apply(state: &State, runtime: &Runtime) {
    for pool in state.pools.all() {
        if let Some(db) = runtime.config.database(&pool.key.database) {
            let settings = PoolSettings::resolve(
                &runtime.config,
                &runtime.secrets,
                &db,
                &db.name,
                &pool.key.user,
            );
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
