//! Raw values and the parsers that turn them into typed settings.
//!
//! Both front-ends hand values over as [`RawValue`]: the ini reader always produces strings,
//! the TOML reader produces whatever type the file used. Every parser accepts the string form
//! (so ini and TOML share one grammar) plus the natural TOML type, and on failure returns only
//! the "expected ..." part; the caller adds the file, line, key and offending value.

use std::path::PathBuf;
use std::time::Duration;

use super::types::ConfigEnum;

/// A value as found in a configuration file, before it is given a type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
    /// A TOML value of a kind no setting accepts (table, datetime, mixed array); the string
    /// names the kind for the error message.
    Other(&'static str),
}

impl RawValue {
    /// How the value is quoted back to the user in an error message.
    pub fn describe(&self) -> String {
        match self {
            Self::Str(s) => format!("{s:?}"),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::List(items) => format!("{items:?}"),
            Self::Other(kind) => format!("<{kind}>"),
        }
    }
}

pub(crate) type Parsed<T> = Result<T, String>;

const DURATION_HELP: &str = "expected a duration: seconds like \"15\" or \"0.5\", or a number with a unit us, ms, s, min, h or d";

/// Seconds as a float (PgBouncer's format) or a number with a unit suffix (our extension).
pub(crate) fn duration(raw: &RawValue) -> Parsed<Duration> {
    let secs = match raw {
        RawValue::Str(s) => return duration_str(s).ok_or_else(|| DURATION_HELP.to_owned()),
        RawValue::Int(i) => *i as f64,
        RawValue::Float(f) => *f,
        _ => return Err(DURATION_HELP.to_owned()),
    };
    seconds(secs, 1.0).ok_or_else(|| DURATION_HELP.to_owned())
}

fn duration_str(s: &str) -> Option<Duration> {
    let s = s.trim();
    // The unit is the trailing run of letters; "1e3" keeps its exponent because it ends in a digit.
    let split = s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len();
    let (number, unit) = s.split_at(split);
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1.0,
        "us" => 1e-6,
        "ms" => 1e-3,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    let number = number.trim_end();
    if number.is_empty() {
        return None;
    }
    seconds(number.parse::<f64>().ok()?, factor)
}

fn seconds(value: f64, factor: f64) -> Option<Duration> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(value * factor).ok()
}

/// PgBouncer stores booleans as integers; we take the usual spellings too.
pub(crate) fn boolean(raw: &RawValue) -> Parsed<bool> {
    const HELP: &str = "expected a boolean: 0/1, yes/no, on/off or true/false";
    match raw {
        RawValue::Bool(b) => Ok(*b),
        RawValue::Int(0) => Ok(false),
        RawValue::Int(1) => Ok(true),
        RawValue::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => Ok(true),
            "0" | "no" | "off" | "false" => Ok(false),
            _ => Err(HELP.to_owned()),
        },
        _ => Err(HELP.to_owned()),
    }
}

/// A non-negative integer within `MIN..=MAX` (decimal digits only).
pub(crate) fn count<const MIN: u32, const MAX: u32>(raw: &RawValue) -> Parsed<u32> {
    let help = || {
        if MAX == u32::MAX {
            format!("expected an integer of at least {MIN}")
        } else {
            format!("expected an integer from {MIN} to {MAX}")
        }
    };
    let value: i128 = match raw {
        RawValue::Int(i) => i128::from(*i),
        RawValue::Str(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(help());
            }
            s.parse::<i128>().map_err(|_| help())?
        }
        _ => return Err(help()),
    };
    if value < i128::from(MIN) || value > i128::from(MAX) {
        return Err(help());
    }
    u32::try_from(value).map_err(|_| help())
}

/// Any u32.
pub(crate) fn uint(raw: &RawValue) -> Parsed<u32> {
    count::<0, { u32::MAX }>(raw)
}

/// A TCP port.
pub(crate) fn port(raw: &RawValue) -> Parsed<u16> {
    let v = count::<1, 65535>(raw)?;
    u16::try_from(v).map_err(|_| "expected an integer from 1 to 65535".to_owned())
}

/// A small level such as `verbose`.
pub(crate) fn level(raw: &RawValue) -> Parsed<u8> {
    let v = count::<0, 255>(raw)?;
    u8::try_from(v).map_err(|_| "expected an integer from 0 to 255".to_owned())
}

/// A file mode in octal, as `chmod` takes it. Only the string form is accepted, because a
/// TOML integer `777` would silently mean decimal 777.
pub(crate) fn octal_mode(raw: &RawValue) -> Parsed<u32> {
    const HELP: &str = "expected an octal file mode as a string, e.g. \"0777\"";
    let RawValue::Str(s) = raw else {
        return Err(HELP.to_owned());
    };
    let s = s.trim();
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(HELP.to_owned());
    }
    match u32::from_str_radix(digits, 8) {
        Ok(v) if v <= 0o7777 => Ok(v),
        _ => Err(HELP.to_owned()),
    }
}

/// A comma-separated list (or a TOML array); items are trimmed and empty items dropped.
pub(crate) fn list(raw: &RawValue) -> Parsed<Vec<String>> {
    match raw {
        RawValue::Str(s) => Ok(split_list(s)),
        RawValue::List(items) => Ok(items
            .iter()
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect()),
        _ => Err("expected a comma-separated list of names".to_owned()),
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A host list: like [`list`], but an empty item is a mistake worth reporting.
pub(crate) fn hosts(raw: &RawValue) -> Parsed<Vec<String>> {
    const HELP: &str =
        "expected a host name, address or socket directory, or a comma-separated list of them";
    let items: Vec<String> = match raw {
        RawValue::Str(s) => s.split(',').map(|i| i.trim().to_owned()).collect(),
        RawValue::List(items) => items.iter().map(|i| i.trim().to_owned()).collect(),
        _ => return Err(HELP.to_owned()),
    };
    if items.iter().any(String::is_empty) {
        return Err(HELP.to_owned());
    }
    Ok(items)
}

/// Any string, kept as written.
pub(crate) fn string(raw: &RawValue) -> Parsed<String> {
    match raw {
        RawValue::Str(s) => Ok(s.clone()),
        _ => Err("expected a string".to_owned()),
    }
}

/// A string where empty means "not set".
pub(crate) fn opt_string(raw: &RawValue) -> Parsed<Option<String>> {
    let s = string(raw)?;
    Ok((!s.is_empty()).then_some(s))
}

/// A path where empty means "not set".
pub(crate) fn opt_path(raw: &RawValue) -> Parsed<Option<PathBuf>> {
    match raw {
        RawValue::Str(s) if s.is_empty() => Ok(None),
        RawValue::Str(s) => Ok(Some(PathBuf::from(s))),
        _ => Err("expected a file path (a string)".to_owned()),
    }
}

/// `server_check_query`: empty disables checks, the word `<empty>` sends an empty query.
pub(crate) fn check_query(raw: &RawValue) -> Parsed<Option<String>> {
    let s = string(raw)?;
    Ok(match s.as_str() {
        "" => None,
        "<empty>" => Some(String::new()),
        _ => Some(s),
    })
}

/// One of the words of a [`ConfigEnum`].
pub(crate) fn word<T: ConfigEnum>(raw: &RawValue) -> Parsed<T> {
    match raw {
        RawValue::Str(s) => T::from_name(s),
        _ => None,
    }
    .ok_or_else(|| format!("expected one of {}", T::expected()))
}

/// The reverse of the parsers: a typed value written back the way an ini file would hold it (SHOW CONFIG).
pub(crate) trait ShowValue {
    fn show(&self) -> String;
}

impl ShowValue for bool {
    fn show(&self) -> String {
        if *self { "1" } else { "0" }.to_owned()
    }
}

macro_rules! show_display {
    ($($t:ty),*) => { $( impl ShowValue for $t {
        fn show(&self) -> String {
            self.to_string()
        }
    } )* };
}
show_display!(u8, u16, u32, String);

impl ShowValue for Duration {
    /// Seconds, with a fraction only when there is one ("15", "0.5").
    fn show(&self) -> String {
        self.as_secs_f64().to_string()
    }
}

impl ShowValue for Vec<String> {
    fn show(&self) -> String {
        self.join(",")
    }
}

impl ShowValue for Option<String> {
    fn show(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

impl ShowValue for Option<PathBuf> {
    fn show(&self) -> String {
        self.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

impl<T: ConfigEnum + std::fmt::Display> ShowValue for T {
    fn show(&self) -> String {
        self.to_string()
    }
}

/// For per-database and per-user overrides: PgBouncer's "-1 means not set" is honoured, so
/// configurations that spell the inherit case explicitly keep working.
pub(crate) fn unset_or<T>(raw: &RawValue, parse: fn(&RawValue) -> Parsed<T>) -> Parsed<Option<T>> {
    match raw {
        RawValue::Int(-1) => Ok(None),
        RawValue::Str(s) if s.trim() == "-1" => Ok(None),
        _ => parse(raw).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{PoolMode, TlsMode};

    fn s(v: &str) -> RawValue {
        RawValue::Str(v.to_owned())
    }

    #[test]
    fn durations_in_seconds_and_with_units() {
        assert_eq!(duration(&s("15")), Ok(Duration::from_secs(15)));
        assert_eq!(duration(&s("0.5")), Ok(Duration::from_millis(500)));
        assert_eq!(duration(&s("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(duration(&s("250 us")), Ok(Duration::from_micros(250)));
        assert_eq!(duration(&s("2min")), Ok(Duration::from_secs(120)));
        assert_eq!(duration(&s("1h")), Ok(Duration::from_secs(3600)));
        assert_eq!(duration(&s("1d")), Ok(Duration::from_secs(86400)));
        assert_eq!(duration(&s("3s")), Ok(Duration::from_secs(3)));
        assert_eq!(duration(&s("1e3")), Ok(Duration::from_secs(1000)));
        assert_eq!(duration(&RawValue::Int(5)), Ok(Duration::from_secs(5)));
        assert_eq!(
            duration(&RawValue::Float(0.25)),
            Ok(Duration::from_millis(250))
        );
        for bad in [
            "", "-1", "abc", "5 weeks", "ms", "inf", "nan", "1e400", "5x",
        ] {
            assert!(duration(&s(bad)).is_err(), "{bad}");
        }
        assert!(duration(&RawValue::Int(-3)).is_err());
        assert!(duration(&RawValue::Float(f64::NAN)).is_err());
        assert!(duration(&RawValue::Bool(true)).is_err());
    }

    #[test]
    fn booleans() {
        for t in ["1", "yes", "ON", "True"] {
            assert_eq!(boolean(&s(t)), Ok(true), "{t}");
        }
        for f in ["0", "no", "Off", "FALSE"] {
            assert_eq!(boolean(&s(f)), Ok(false), "{f}");
        }
        assert_eq!(boolean(&RawValue::Bool(true)), Ok(true));
        assert_eq!(boolean(&RawValue::Int(0)), Ok(false));
        assert!(boolean(&s("2")).is_err());
        assert!(boolean(&RawValue::Int(2)).is_err());
    }

    #[test]
    fn counts_and_ranges() {
        assert_eq!(uint(&s("20")), Ok(20));
        assert_eq!(uint(&RawValue::Int(7)), Ok(7));
        assert!(uint(&s("-1")).is_err());
        assert!(uint(&s("1.5")).is_err());
        assert!(uint(&s("99999999999")).is_err());
        assert!(uint(&RawValue::Int(-1)).is_err());
        assert_eq!(port(&s("6432")), Ok(6432));
        assert!(port(&s("0")).is_err());
        assert!(port(&s("65536")).is_err());
        assert_eq!(level(&s("3")), Ok(3));
        assert!(level(&s("256")).is_err());
        let e = count::<0, 16383>(&s("16384")).unwrap_err();
        assert!(e.contains("0 to 16383"), "{e}");
    }

    #[test]
    fn octal_modes() {
        assert_eq!(octal_mode(&s("0777")), Ok(0o777));
        assert_eq!(octal_mode(&s("0o600")), Ok(0o600));
        assert_eq!(octal_mode(&s("755")), Ok(0o755));
        assert!(octal_mode(&s("0789")).is_err());
        assert!(octal_mode(&s("77777")).is_err());
        assert!(octal_mode(&RawValue::Int(511)).is_err());
    }

    #[test]
    fn lists_and_hosts() {
        assert_eq!(list(&s("")), Ok(vec![]));
        assert_eq!(
            list(&s(" a , b,,c ")),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            list(&RawValue::List(vec![" x".into()])),
            Ok(vec!["x".into()])
        );
        assert_eq!(hosts(&s("h1, h2")), Ok(vec!["h1".into(), "h2".into()]));
        assert!(hosts(&s("h1,,h2")).is_err());
        assert!(hosts(&RawValue::Int(1)).is_err());
    }

    #[test]
    fn strings_and_special_queries() {
        assert_eq!(opt_string(&s("")), Ok(None));
        assert_eq!(opt_path(&s("/x")), Ok(Some(PathBuf::from("/x"))));
        assert_eq!(check_query(&s("")), Ok(None));
        assert_eq!(check_query(&s("<empty>")), Ok(Some(String::new())));
        assert_eq!(check_query(&s("select 1")), Ok(Some("select 1".into())));
        assert!(string(&RawValue::Int(1)).is_err());
    }

    #[test]
    fn words_and_unset() {
        assert_eq!(word::<PoolMode>(&s("statement")), Ok(PoolMode::Statement));
        let e = word::<TlsMode>(&s("sometimes")).unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
        assert_eq!(unset_or(&s("-1"), uint), Ok(None));
        assert_eq!(unset_or(&RawValue::Int(-1), duration), Ok(None));
        assert_eq!(unset_or(&s("4"), uint), Ok(Some(4)));
        assert!(unset_or(&s("-2"), uint).is_err());
    }

    #[test]
    fn duration_scanner_never_panics() {
        for text in crate::config::raw::all_strings(&['1', '.', 'e', 'm', 's', 'é', '-'], 5) {
            let _ = duration(&s(&text));
        }
    }
}
