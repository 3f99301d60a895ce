//! Helpers of the plugin tests: error inspection for tokio-postgres and psql, psql with SQLSTATEs, the
//! testing plugin's path, plugin counters.

use anyhow::{Context, bail};
use pgwarden::plugin::{Plugin, PluginStats};
use pgwarden_tests::clients::{ClientOutput, Psql};
use pgwarden_tests::pooler::Pooler;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The misbehaving `testing` plugin built with this pgwarden.
pub const TESTING: &str = pgwarden::plugin::builtin::TESTING_PLUGIN;

/// (SQLSTATE, message) of a server-sent error; `None` for any other error.
pub fn code_message(e: &tokio_postgres::Error) -> Option<(String, String)> {
    e.as_db_error()
        .map(|d| (d.code().code().to_owned(), d.message().to_owned()))
}

/// Fails unless `result` is a server error with exactly this SQLSTATE and message.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    code: &str,
    message: &str,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected {code} {message:?}"),
        Err(e) => assert_eq!(
            code_message(&e),
            Some((code.to_owned(), message.to_owned())),
            "{what}: unexpected error {e:?}"
        ),
    }
}

/// The readonly plugin's refusal of a statement whose command is `command`.
pub fn ro_denial(command: &str) -> String {
    format!("cannot execute {command} in a read-only session (pgwarden readonly policy)")
}

/// psql through the pooler that prints SQLSTATEs (`VERBOSITY=verbose`): `ERROR:  25006: message`.
pub fn psql_verbose(pooler: &Pooler, user: &str, password: &str, db: &str) -> Psql {
    let mut psql = Psql::new("127.0.0.1", pooler.port, user, db).password(password);
    psql.extra_args
        .extend(["-v".to_owned(), "VERBOSITY=verbose".to_owned()]);
    psql
}

/// Every `ERROR:  <code>: <message>` (or FATAL) psql printed on stderr, in order.
pub fn psql_errors(out: &ClientOutput) -> Vec<(String, String)> {
    out.stderr
        .lines()
        .filter_map(|l| {
            let rest = l
                .split_once("ERROR:  ")
                .or_else(|| l.split_once("FATAL:  "))?
                .1;
            let (code, message) = rest.split_once(": ")?;
            (code.len() == 5).then(|| (code.to_owned(), message.to_owned()))
        })
        .collect()
}

/// Runs `sql` (one simple-protocol Query) with psql and returns its single error; fails if psql
/// succeeded or printed other than one error.
pub async fn psql_error(psql: &Psql, sql: &str) -> anyhow::Result<(String, String)> {
    let out = psql.run_async(sql).await?;
    if out.success() {
        bail!(
            "psql -c {sql:?} succeeded, stdout: {:?}, stderr: {:?}",
            out.stdout,
            out.stderr
        );
    }
    match psql_errors(&out).as_slice() {
        [one] => Ok(one.clone()),
        other => bail!(
            "psql -c {sql:?}: expected one error, got {other:?}; stderr: {}",
            out.stderr
        ),
    }
}

/// The loaded plugin named `name` in the pooler's current generation.
pub fn plugin(pooler: &Pooler, name: &str) -> anyhow::Result<Arc<Plugin>> {
    pooler
        .state
        .runtime()
        .plugins
        .all()
        .iter()
        .find(|p| p.name() == name)
        .cloned()
        .with_context(|| format!("no plugin named {name:?} is loaded"))
}

/// A plugin's counters at one moment: calls, allows, denials, errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub calls: u64,
    pub allows: u64,
    pub denials: u64,
    pub errors: u64,
}

impl Counts {
    pub fn of(stats: &PluginStats) -> Self {
        Self {
            calls: stats.calls.load(Ordering::Relaxed),
            allows: stats.allows.load(Ordering::Relaxed),
            denials: stats.denials.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
        }
    }

    /// What changed since `before`.
    pub fn since(self, before: Self) -> Self {
        Self {
            calls: self.calls - before.calls,
            allows: self.allows - before.allows,
            denials: self.denials - before.denials,
            errors: self.errors - before.errors,
        }
    }
}
