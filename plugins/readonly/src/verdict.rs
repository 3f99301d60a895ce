//! The readonly policy's decision, independent of the component glue so it tests natively.

use pgwarden_plugin_sdk::query_policy::{Statement, StatementKind, Verdict};
use pgwarden_plugin_sdk::{Config, deny, sqlstate};

use crate::known::{is_harmless_function, is_writing_word, normalize_function};

/// The default refusal; `{command}` is replaced by the offending statement's command.
pub const DEFAULT_MESSAGE: &str =
    "cannot execute {command} in a read-only session (pgwarden readonly policy)";

/// What `init` read from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Normalized names of the functions this deployment accepts in read-only sessions.
    allow_functions: Vec<String>,
    /// The refusal text, with `{command}` still in it.
    message: String,
}

impl Settings {
    /// Reads `allow_functions` and `message`; any other key is an error.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        config.reject_unknown(&["allow_functions", "message"])?;
        let allow_functions = config
            .get_list("allow_functions")
            .iter()
            .map(|name| normalize_function(name))
            .collect();
        let message = match config.get("message") {
            Some(text) if text.trim().is_empty() => {
                return Err("configuration key `message` must not be empty".to_string());
            }
            Some(text) => text.to_string(),
            None => DEFAULT_MESSAGE.to_string(),
        };
        Ok(Self {
            allow_functions,
            message,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allow_functions: Vec::new(),
            message: DEFAULT_MESSAGE.to_string(),
        }
    }
}

/// Allows a query (its `statements`) unless one of them is not read-only (and not exempted by
/// `allow_functions`); the first such statement is named in the refusal.
pub fn verdict(settings: &Settings, statements: &[Statement]) -> Verdict {
    match statements
        .iter()
        .find(|statement| !statement.read_only && !exempt(settings, statement))
    {
        Some(statement) => {
            let message = settings
                .message
                .replace("{command}", &command_name(statement));
            Verdict::Deny(deny(sqlstate::READ_ONLY_SQL_TRANSACTION, message))
        }
        None => Verdict::Allow,
    }
}

/// Whether a statement pgwarden reads as not read-only is so only because it calls functions the
/// operator allowed. That needs a plain query (not a data, schema or session change), at least one
/// allowed function (otherwise pgwarden's reason is something else), every function either
/// allowed or known harmless, and no word that makes a query write or lock. Each test can only
/// refuse the exemption, so any doubt leaves the statement denied.
fn exempt(settings: &Settings, statement: &Statement) -> bool {
    if settings.allow_functions.is_empty() || statement.kind != StatementKind::Query {
        return false;
    }
    let mut any_allowed = false;
    for function in &statement.functions {
        let name = normalize_function(function);
        if settings.allow_functions.contains(&name) {
            any_allowed = true;
        } else if !is_harmless_function(&name) {
            return false;
        }
    }
    any_allowed && !statement.words.iter().any(|word| is_writing_word(word))
}

/// The command to name in the refusal: the statement's leading keyword, except that for a `WITH`
/// the data-changing command inside it is what PostgreSQL would name.
fn command_name(statement: &Statement) -> String {
    if statement.command == "WITH" {
        let words = &statement.words;
        let inner = words
            .iter()
            .enumerate()
            .find(|(i, word)| match word.as_str() {
                "INSERT" | "DELETE" | "MERGE" => true,
                // `FOR UPDATE` / `FOR NO KEY UPDATE` are locking clauses, not an UPDATE.
                "UPDATE" => !matches!(
                    i.checked_sub(1)
                        .and_then(|j| words.get(j))
                        .map(String::as_str),
                    Some("FOR" | "KEY")
                ),
                _ => false,
            });
        if let Some((_, word)) = inner {
            return word.clone();
        }
    }
    if statement.command.is_empty() {
        "this statement".to_string()
    } else {
        statement.command.clone()
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
