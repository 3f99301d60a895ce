//! The command line, PgBouncer's where the two overlap, and `--check`.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{ArgAction, Parser};

use crate::config::{Config, Hook, Loaded, OnError};
use crate::plugin::PluginSet;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "pgwarden",
    about = "A PostgreSQL connection pooler: a drop-in for PgBouncer, with sandboxed WebAssembly plugins.",
    version,
    disable_version_flag = true
)]
pub struct Cli {
    /// Run in the background; needs `pidfile` and `logfile` in the config.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Do not log to stderr (logging to `logfile` is unaffected).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// More verbose logging; repeat for more (same as `verbose` in the config).
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,
    /// Switch to this Unix user after binding the listening sockets.
    #[arg(short = 'u', long = "user", value_name = "USERNAME")]
    pub user: Option<String>,
    /// Print the version and exit.
    #[arg(short = 'V', long = "version", action = ArgAction::Version)]
    pub version: Option<bool>,
    /// PgBouncer's online restart; not supported (use a rolling restart instead).
    #[arg(short = 'R', long = "reboot", hide = true)]
    pub reboot: bool,
    /// Validate the configuration, print the pools it defines, and exit.
    #[arg(long = "check")]
    pub check: bool,
    /// A PgBouncer `pgbouncer.ini` or a pgwarden `.toml` file.
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,
}

/// What `--check` prints: the listeners, auth, every pool the configuration defines, and the plugins, with
/// the hooks each serves as loaded in `plugins` (`--check` loads them as a start would, which validates them).
pub fn describe(loaded: &Loaded, plugins: &PluginSet) -> String {
    let c: &Config = &loaded.config;
    let s = &c.settings;
    let mut out = String::new();
    let format = if c
        .path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    {
        "TOML"
    } else {
        "PgBouncer ini"
    };
    let _ = writeln!(out, "{}: OK ({format})", c.path.display());
    let mut listen: Vec<String> = s
        .listen_addr
        .iter()
        .map(|a| format!("{a}:{}", s.listen_port))
        .collect();
    if let Some(dir) = &s.unix_socket_dir {
        listen.push(
            crate::net::socket_path(dir, s.listen_port)
                .display()
                .to_string(),
        );
    }
    let _ = writeln!(
        out,
        "listen: {}",
        if listen.is_empty() {
            "(nothing)".into()
        } else {
            listen.join(", ")
        }
    );
    if !s.metrics_listen_addr.is_empty() {
        let addrs: Vec<String> = s
            .metrics_listen_addr
            .iter()
            .map(|a| format!("{a}:{}", s.metrics_listen_port))
            .collect();
        let _ = writeln!(
            out,
            "metrics: {} (GET /metrics, /healthz, /readyz)",
            addrs.join(", ")
        );
    }
    let users: Vec<&str> = c
        .auth_file
        .iter()
        .flat_map(|f| f.entries.keys().map(String::as_str))
        .collect();
    let auth_file = c.auth_file.as_ref().map_or_else(
        || "no auth_file".to_owned(),
        |f| {
            format!(
                "auth_file {} ({} user{})",
                f.path.display(),
                users.len(),
                if users.len() == 1 { "" } else { "s" }
            )
        },
    );
    let _ = writeln!(out, "auth: {}, {auth_file}", s.auth_type);
    let _ = writeln!(out, "pools:");
    for db in c.databases.values().chain(c.fallback.iter()) {
        let target = format!(
            "{}:{}/{}",
            if db.host.is_empty() {
                "unix".to_owned()
            } else {
                db.host.join(",")
            },
            db.port,
            db.dbname.as_deref().unwrap_or(if db.name == "*" {
                "<client's database>"
            } else {
                &db.name
            })
        );
        let pool_mode = db.pool_mode.unwrap_or(s.pool_mode);
        let size = db.pool_size.unwrap_or(s.default_pool_size);
        let reserve = db.reserve_pool_size.unwrap_or(s.reserve_pool_size);
        let who = match &db.user {
            Some(u) => format!("one pool, as user {u}"),
            None if users.is_empty() => "one pool per client user".to_owned(),
            None => format!("one pool per client user ({})", users.join(", ")),
        };
        let _ = writeln!(
            out,
            "  {} -> {target}  pool_mode={pool_mode} pool_size={size} reserve_pool_size={reserve}; {who}",
            db.name
        );
    }
    for (user, u) in &c.users {
        if let Some(m) = u.pool_mode {
            let _ = writeln!(out, "  [users] {user}: pool_mode={m}");
        }
    }
    if !c.plugins.is_empty() {
        let _ = writeln!(out, "plugins (in run order):");
    }
    for spec in &c.plugins {
        let hooks = plugins
            .all()
            .iter()
            .find(|p| p.name() == spec.name)
            .map_or_else(
                || "not loaded".to_owned(),
                |p| {
                    let served: Vec<&str> = [Hook::Router, Hook::Policy, Hook::Auth]
                        .into_iter()
                        .filter(|h| p.serves(*h))
                        .map(Hook::as_str)
                        .collect();
                    if served.is_empty() {
                        "none".to_owned()
                    } else {
                        served.join(",")
                    }
                },
            );
        let databases = spec
            .databases
            .as_ref()
            .map_or_else(|| "*".to_owned(), |d| d.join(","));
        let on_error = match spec.on_error {
            OnError::Deny => "deny",
            OnError::Allow => "allow",
        };
        let _ = writeln!(
            out,
            "  {} -> {}  databases={databases} order={} on_error={on_error} timeout={:?} memory_limit={}; hooks: {hooks}; configured at {}",
            spec.name,
            spec.source,
            spec.order,
            spec.timeout,
            size(spec.memory_limit),
            spec.origin()
        );
    }
    for w in &loaded.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// A byte count the way the configuration writes it (`16MiB`, `512KiB`, or bytes).
fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{}KiB", bytes / KIB)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_configured() {
        assert_eq!(size(16 << 20), "16MiB");
        assert_eq!(size(512 << 10), "512KiB");
        assert_eq!(size(1000), "1000");
    }

    #[test]
    fn parses_pgbouncer_switches() {
        let cli = Cli::try_parse_from([
            "pgwarden",
            "-d",
            "-q",
            "-vv",
            "-u",
            "postgres",
            "/etc/pgbouncer/pgbouncer.ini",
        ])
        .unwrap();
        assert!(cli.daemon && cli.quiet && !cli.check);
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.user.as_deref(), Some("postgres"));
        assert_eq!(cli.config, PathBuf::from("/etc/pgbouncer/pgbouncer.ini"));
        let cli = Cli::try_parse_from(["pgwarden", "--check", "x.toml"]).unwrap();
        assert!(cli.check);
        assert!(
            Cli::try_parse_from(["pgwarden"]).is_err(),
            "config file is required"
        );
        let v = Cli::try_parse_from(["pgwarden", "-V"]).unwrap_err();
        assert_eq!(v.kind(), clap::error::ErrorKind::DisplayVersion);
    }
}
