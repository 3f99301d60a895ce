//! A plugin's configuration table, read by hand (no serde: plugins stay small).

use crate::glob;

/// The key/value pairs the operator wrote for a plugin, in order.
///
/// Values are strings, as in pgwarden's configuration file; the getters parse them. When a key
/// appears more than once the last value wins, like a later line overriding an earlier one.
/// Error messages name the key so that pgwarden's "plugin refused to load" report is actionable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Wraps the table `init` receives.
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }

    /// Every pair, in the order written.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` if unset.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`, which must be set and not blank.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        match self.get(key) {
            Some(value) if !value.trim().is_empty() => Ok(value),
            Some(_) => Err(format!("configuration key `{key}` must not be empty")),
            None => Err(format!("missing required configuration key `{key}`")),
        }
    }

    /// `key` as a boolean: `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off` (any case), as
    /// PgBouncer and PostgreSQL accept. `None` if unset.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, String> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(format!(
                "configuration key `{key}`: expected a boolean (true/false, yes/no, on/off, 1/0), got {value:?}"
            )),
        }
    }

    /// `key` as a comma-separated list, each item trimmed, empty items dropped; empty if unset.
    pub fn get_list(&self, key: &str) -> Vec<String> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// `key` as a non-negative integer. `None` if unset.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, String> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        value.trim().parse::<u64>().map(Some).map_err(|_| {
            format!("configuration key `{key}`: expected a non-negative integer, got {value:?}")
        })
    }

    /// `key` as a duration in milliseconds: a plain number is milliseconds; the units `ms`, `s`,
    /// `min`, `h` and `d` may follow (`250ms`, `5s`, `2 min`). `None` if unset.
    pub fn get_duration_ms(&self, key: &str) -> Result<Option<u64>, String> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        parse_duration_ms(value)
            .map(Some)
            .map_err(|why| format!("configuration key `{key}`: {why}, got {value:?}"))
    }

    /// Every `(rest, value)` whose key is `prefix` followed by `rest`, in order; e.g. with prefix
    /// `"rule."`, the key `rule.10` yields `("10", value)`. `rest` may be empty (key `rule.`): the
    /// caller decides whether that is an error.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.entries.iter().filter_map(move |(key, value)| {
            key.strip_prefix(prefix).map(|rest| (rest, value.as_str()))
        })
    }

    /// Fails on the first key that matches none of `allowed`, so that a misspelt key refuses the
    /// load instead of being silently ignored. Patterns may use `*` and `?` (see [`glob`]):
    /// `["message", "rule.*"]`.
    pub fn reject_unknown(&self, allowed: &[&str]) -> Result<(), String> {
        for (key, _) in &self.entries {
            if !allowed.iter().any(|pattern| glob::matches(pattern, key)) {
                return Err(format!(
                    "unknown configuration key `{key}` (known keys: {})",
                    allowed.join(", ")
                ));
            }
        }
        Ok(())
    }
}

impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Self::new(entries)
    }
}

/// Splits a comma-separated list, trimming items and dropping empty ones.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `<integer>[ ]<unit>` into milliseconds; the error says what was expected.
fn parse_duration_ms(value: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected a duration such as 250ms, 5s, 2min, 1h or 1d";
    let text = value.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| EXPECTED.to_string())?;
    let factor: u64 = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(EXPECTED.to_string()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| "duration too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn get_returns_last_value() {
        let c = config(&[("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(c.get("a"), Some("3"));
        assert_eq!(c.get("b"), Some("2"));
        assert_eq!(c.get("c"), None);
        assert_eq!(c.get_or("c", "d"), "d");
        assert_eq!(c.entries().len(), 3);
    }

    #[test]
    fn require_reports_missing_and_blank() {
        let c = config(&[("a", "x"), ("blank", "  ")]);
        assert_eq!(c.require("a"), Ok("x"));
        assert_eq!(
            c.require("b"),
            Err("missing required configuration key `b`".to_string())
        );
        assert!(
            c.require("blank")
                .unwrap_err()
                .contains("must not be empty")
        );
    }

    #[test]
    fn booleans() {
        let c = config(&[
            ("t1", "true"),
            ("t2", " YES "),
            ("t3", "1"),
            ("t4", "On"),
            ("f1", "false"),
            ("f2", "no"),
            ("f3", "0"),
            ("f4", "OFF"),
            ("bad", "maybe"),
        ]);
        for key in ["t1", "t2", "t3", "t4"] {
            assert_eq!(c.get_bool(key), Ok(Some(true)), "{key}");
        }
        for key in ["f1", "f2", "f3", "f4"] {
            assert_eq!(c.get_bool(key), Ok(Some(false)), "{key}");
        }
        assert_eq!(c.get_bool("unset"), Ok(None));
        let err = c.get_bool("bad").unwrap_err();
        assert!(err.contains("`bad`") && err.contains("maybe"), "{err}");
    }

    #[test]
    fn lists() {
        let c = config(&[("l", " a, b ,,c ,"), ("empty", " , ")]);
        assert_eq!(c.get_list("l"), vec!["a", "b", "c"]);
        assert!(c.get_list("empty").is_empty());
        assert!(c.get_list("unset").is_empty());
    }

    #[test]
    fn integers() {
        let c = config(&[("n", " 42 "), ("neg", "-1"), ("word", "ten")]);
        assert_eq!(c.get_u64("n"), Ok(Some(42)));
        assert_eq!(c.get_u64("unset"), Ok(None));
        assert!(c.get_u64("neg").is_err());
        assert!(c.get_u64("word").unwrap_err().contains("`word`"));
    }

    #[test]
    fn durations() {
        let c = config(&[
            ("plain", "250"),
            ("ms", "250ms"),
            ("s", "5s"),
            ("spaced", "2 min"),
            ("h", "1h"),
            ("d", "1d"),
            ("bad_unit", "5 weeks"),
            ("no_number", "ms"),
            ("negative", "-5s"),
            ("fraction", "1.5s"),
            ("huge", "18446744073709551615d"),
        ]);
        assert_eq!(c.get_duration_ms("plain"), Ok(Some(250)));
        assert_eq!(c.get_duration_ms("ms"), Ok(Some(250)));
        assert_eq!(c.get_duration_ms("s"), Ok(Some(5_000)));
        assert_eq!(c.get_duration_ms("spaced"), Ok(Some(120_000)));
        assert_eq!(c.get_duration_ms("h"), Ok(Some(3_600_000)));
        assert_eq!(c.get_duration_ms("d"), Ok(Some(86_400_000)));
        assert_eq!(c.get_duration_ms("unset"), Ok(None));
        for key in ["bad_unit", "no_number", "negative", "fraction", "huge"] {
            let err = c.get_duration_ms(key).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn prefixed_keys_in_order() {
        let c = config(&[
            ("rule.2", "b"),
            ("other", "x"),
            ("rule.", "empty"),
            ("rule.1", "a"),
        ]);
        let got: Vec<_> = c.with_prefix("rule.").collect();
        assert_eq!(got, vec![("2", "b"), ("", "empty"), ("1", "a")]);
    }

    #[test]
    fn reject_unknown_accepts_known_and_patterns() {
        let c = config(&[
            ("message", "x"),
            ("rule.1", "y"),
            ("database.a.b.auth_user", "u"),
        ]);
        assert_eq!(
            c.reject_unknown(&["message", "rule.*", "database.*.auth_user"]),
            Ok(())
        );
    }

    #[test]
    fn reject_unknown_names_the_key() {
        let c = config(&[("mesage", "x")]);
        let err = c.reject_unknown(&["message", "rule.*"]).unwrap_err();
        assert_eq!(
            err,
            "unknown configuration key `mesage` (known keys: message, rule.*)"
        );
        assert!(Config::default().reject_unknown(&[]).is_ok());
    }

    #[test]
    fn from_vec() {
        let c: Config = vec![("a".to_string(), "b".to_string())].into();
        assert_eq!(c.get("a"), Some("b"));
    }
}
