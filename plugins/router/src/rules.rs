//! Routing rules: parsing `rule.N = <conditions> -> <actions>` and matching a session.

use pgwarden_plugin_sdk::router::Destination;
use pgwarden_plugin_sdk::types::{Denial, PoolMode, SessionInfo};
use pgwarden_plugin_sdk::{Config, deny, glob, is_valid_sqlstate, sqlstate};

use crate::cidr::ClientMatch;
use crate::tokens::{Token, Word, tokenize};

/// One `rule.N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The configuration key, `rule.N`, for logs and messages.
    pub name: String,
    /// `N`: rules are tried in increasing order.
    pub number: u64,
    /// All must hold; none means the rule matches every client.
    conditions: Vec<Condition>,
    /// What happens to a matching client.
    pub outcome: Outcome,
}

/// A condition: any of its alternatives must match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    User(Vec<String>),
    Database(Vec<String>),
    ApplicationName(Vec<String>),
    Client(Vec<ClientMatch>),
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send the client there (fields left `None` keep the configuration's choice).
    Route(Destination),
    /// Refuse the connection.
    Deny(Denial),
}

impl Rule {
    /// Whether every condition holds for `session`.
    pub fn matches(&self, session: &SessionInfo) -> bool {
        self.conditions.iter().all(|condition| match condition {
            Condition::User(patterns) => any_glob(patterns, &session.user),
            Condition::Database(patterns) => any_glob(patterns, &session.database),
            Condition::ApplicationName(patterns) => any_glob(patterns, &session.application_name),
            Condition::Client(alternatives) => alternatives
                .iter()
                .any(|alternative| alternative.matches(&session.client_ip)),
        })
    }
}

fn any_glob(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|pattern| glob::matches(pattern, text))
}

/// Reads every `rule.N` of the configuration, sorted by `N`. Any other key is an error, and so is
/// every rule that does not parse (the message names it).
pub fn parse_rules(config: &Config) -> Result<Vec<Rule>, String> {
    config.reject_unknown(&["rule.*"])?;
    let mut rules = Vec::new();
    for (suffix, text) in config.with_prefix("rule.") {
        let name = format!("rule.{suffix}");
        let number = parse_number(suffix).ok_or_else(|| {
            format!("`{name}`: rules are named rule.N with N a number (rule.1, rule.2, ...)")
        })?;
        let rule = parse_rule(&name, number, text).map_err(|why| format!("{name}: {why}"))?;
        rules.push(rule);
    }
    rules.sort_by_key(|rule| rule.number);
    if let Some(pair) = rules
        .windows(2)
        .find(|pair| pair[0].number == pair[1].number)
    {
        return Err(format!(
            "{} and {} have the same number: each rule needs its own",
            pair[0].name, pair[1].name
        ));
    }
    Ok(rules)
}

fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses one rule's text.
pub fn parse_rule(name: &str, number: u64, text: &str) -> Result<Rule, String> {
    let tokens = tokenize(text)?;
    let mut sides = tokens.split(|token| *token == Token::Arrow);
    let (Some(left), Some(right), None) = (sides.next(), sides.next(), sides.next()) else {
        return Err("expected `<conditions> -> <actions>` with exactly one `->`".to_string());
    };
    Ok(Rule {
        name: name.to_string(),
        number,
        conditions: parse_conditions(&words(left))?,
        outcome: parse_actions(name, &words(right))?,
    })
}

fn words(tokens: &[Token]) -> Vec<&Word> {
    tokens
        .iter()
        .filter_map(|token| match token {
            Token::Word(word) => Some(word),
            Token::Arrow => None,
        })
        .collect()
}

fn parse_conditions(words: &[&Word]) -> Result<Vec<Condition>, String> {
    if let [word] = words
        && word.key == "*"
        && word.values.is_none()
    {
        return Ok(Vec::new());
    }
    let mut conditions = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for word in words {
        let key = word.key.as_str();
        if seen.contains(&key) {
            return Err(format!("condition `{key}` is given twice"));
        }
        seen.push(key);
        let values = || -> Result<Vec<String>, String> {
            let values = word
                .values
                .clone()
                .ok_or_else(|| format!("condition `{key}` needs a value: {key}=<value>"))?;
            if key != "application_name" && values.iter().any(String::is_empty) {
                return Err(format!("condition `{key}` has an empty value"));
            }
            Ok(values)
        };
        conditions.push(match key {
            "user" => Condition::User(values()?),
            "database" => Condition::Database(values()?),
            "application_name" => Condition::ApplicationName(values()?),
            "client" => Condition::Client(
                values()?
                    .iter()
                    .map(|value| ClientMatch::parse(value))
                    .collect::<Result<_, _>>()
                    .map_err(|why| format!("condition `client`: {why}"))?,
            ),
            "*" => return Err("`*` (every client) cannot be combined with conditions".to_string()),
            _ => {
                return Err(format!(
                    "unknown condition `{key}` (expected user=, database=, application_name=, client= or *)"
                ));
            }
        });
    }
    Ok(conditions)
}

/// The actions of a rule, as written.
#[derive(Default)]
struct Actions {
    database: Option<String>,
    pool_mode: Option<PoolMode>,
    server_user: Option<String>,
    deny: bool,
    message: Option<String>,
    sqlstate: Option<String>,
    detail: Option<String>,
    hint: Option<String>,
}

fn parse_actions(name: &str, words: &[&Word]) -> Result<Outcome, String> {
    if words.is_empty() {
        return Err(
            "no action after `->` (expected database=, pool_mode=, server_user= or deny)"
                .to_string(),
        );
    }
    let mut actions = Actions::default();
    let mut seen: Vec<&str> = Vec::new();
    for word in words {
        let key = word.key.as_str();
        if seen.contains(&key) {
            return Err(format!("action `{key}` is given twice"));
        }
        seen.push(key);
        match key {
            "deny" if word.values.is_none() => actions.deny = true,
            "deny" => {
                return Err("`deny` takes no value (use message=\"...\" after it)".to_string());
            }
            "database" => actions.database = Some(single(word, false)?),
            "server_user" => actions.server_user = Some(single(word, false)?),
            "pool_mode" => actions.pool_mode = Some(parse_pool_mode(&single(word, false)?)?),
            "message" => actions.message = Some(single(word, false)?),
            "detail" => actions.detail = Some(single(word, true)?),
            "hint" => actions.hint = Some(single(word, true)?),
            "sqlstate" => {
                let code = single(word, false)?;
                if !is_valid_sqlstate(&code) {
                    return Err(format!(
                        "sqlstate `{code}` is not a SQLSTATE (five digits or upper-case letters)"
                    ));
                }
                actions.sqlstate = Some(code);
            }
            _ => {
                return Err(format!(
                    "unknown action `{key}` (expected database=, pool_mode=, server_user=, or deny with optional message=, sqlstate=, detail=, hint=)"
                ));
            }
        }
    }
    outcome(name, actions)
}

/// Checks that the actions fit together and builds the outcome.
fn outcome(name: &str, actions: Actions) -> Result<Outcome, String> {
    let routes =
        actions.database.is_some() || actions.pool_mode.is_some() || actions.server_user.is_some();
    let deny_only = actions.message.is_some()
        || actions.sqlstate.is_some()
        || actions.detail.is_some()
        || actions.hint.is_some();
    if actions.deny {
        if routes {
            return Err(
                "`deny` cannot be combined with database=, pool_mode= or server_user=".to_string(),
            );
        }
        let message = actions
            .message
            .unwrap_or_else(|| format!("connection refused by pgwarden router ({name})"));
        let code = actions
            .sqlstate
            .unwrap_or_else(|| sqlstate::INVALID_AUTHORIZATION_SPECIFICATION.to_string());
        let mut denial = deny(code, message);
        denial.detail = actions.detail;
        denial.hint = actions.hint;
        return Ok(Outcome::Deny(denial));
    }
    if deny_only {
        return Err("message=, sqlstate=, detail= and hint= only go with `deny`".to_string());
    }
    Ok(Outcome::Route(Destination {
        database: actions.database,
        pool_mode: actions.pool_mode,
        server_user: actions.server_user,
    }))
}

/// The one value of an action; `allow_empty` for free text that may be blank.
fn single(word: &Word, allow_empty: bool) -> Result<String, String> {
    let key = &word.key;
    match word.values.as_deref() {
        None => Err(format!("action `{key}` needs a value: {key}=<value>")),
        Some([value]) if allow_empty || !value.is_empty() => Ok(value.clone()),
        Some([_]) => Err(format!("action `{key}` has an empty value")),
        Some(_) => Err(format!(
            "action `{key}` takes one value (quote it if it contains a comma)"
        )),
    }
}

fn parse_pool_mode(text: &str) -> Result<PoolMode, String> {
    match text.to_ascii_lowercase().as_str() {
        "session" => Ok(PoolMode::Session),
        "transaction" => Ok(PoolMode::Transaction),
        "statement" => Ok(PoolMode::Statement),
        _ => Err(format!(
            "pool_mode `{text}` is not one of session, transaction, statement"
        )),
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
pub(crate) mod tests;
