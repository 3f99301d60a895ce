//! The client's first packets and what its StartupMessage asks for.

use std::borrow::Cow;

use bytes::BytesMut;

use crate::params::Tracked;
use crate::protocol::startup::StartupMessage;

/// What a client's startup parameters amount to, after PgBouncer's rules (borrowed from the message: a
/// login copies only what it keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStartup<'a> {
    pub user: &'a str,
    pub database: &'a str,
    /// Values of tracked parameters the client asked for, by tracked index.
    pub tracked: Vec<(usize, Cow<'a, str>)>,
}

/// Applies PgBouncer's startup parameter rules: tracked parameters are kept, `ignore_startup_parameters`
/// are dropped, anything else is refused with PgBouncer's message. `options` may carry `-c name=value` /
/// `--name=value` settings, which follow the same rules.
pub fn process<'a>(
    msg: &'a StartupMessage,
    ignore: &[String],
    tracked: &Tracked,
) -> Result<ClientStartup<'a>, String> {
    let ignored = |k: &str| ignore.iter().any(|i| i.trim().eq_ignore_ascii_case(k));
    let mut user = None;
    let mut database = None;
    let mut values = Vec::new();
    for (key, value) in msg.params() {
        match key {
            "user" => user = Some(value),
            "database" => database = Some(value),
            "replication" if is_false(value) => {}
            "options" => apply_options(value, ignored("options"), &ignored, tracked, &mut values)?,
            k => {
                if let Some(i) = tracked.index(k) {
                    values.push((i, Cow::Borrowed(value)));
                } else if !ignored(k) {
                    return Err(format!("unsupported startup parameter: {k}"));
                }
            }
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| "no username supplied".to_owned())?;
    let database = database.filter(|d| !d.is_empty()).unwrap_or(user);
    Ok(ClientStartup {
        user,
        database,
        tracked: values,
    })
}

fn is_false(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "false" | "off" | "no" | "0"
    )
}

fn apply_options(
    options: &str,
    ignore_all: bool,
    ignored: &dyn Fn(&str) -> bool,
    tracked: &Tracked,
    values: &mut Vec<(usize, Cow<'_, str>)>,
) -> Result<(), String> {
    let words = split_options(options);
    let mut it = words.iter();
    while let Some(word) = it.next() {
        let setting = if word == "-c" {
            it.next().map(String::as_str)
        } else {
            word.strip_prefix("--").or_else(|| word.strip_prefix("-c"))
        };
        let Some((key, value)) = setting.and_then(|s| s.split_once('=')) else {
            if ignore_all {
                continue;
            }
            return Err("unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed".into());
        };
        // PostgreSQL treats '-' and '_' alike in option names given this way.
        let key = key.replace('-', "_");
        if let Some(i) = tracked.index(&key) {
            values.push((i, Cow::Owned(value.to_owned())));
        } else if !(ignore_all || ignored(&key)) {
            return Err(format!("unsupported startup parameter in options: {key}"));
        }
    }
    Ok(())
}

/// Splits `options` on unescaped whitespace, with `\` escaping the next character (libpq's rule).
fn split_options(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The single byte that refuses SSLRequest and GSSENCRequest ("not here; continue in plain text").
pub fn write_refusal(buf: &mut BytesMut) {
    buf.extend_from_slice(b"N");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage::new(0, params.iter().copied())
    }

    fn tracked() -> Tracked {
        Tracked::new(&["IntervalStyle".into()])
    }

    #[test]
    fn defaults_and_tracked_values() {
        let t = tracked();
        let m = msg(&[
            ("user", "bob"),
            ("DateStyle", "ISO"),
            ("application_name", "psql"),
        ]);
        let s = process(&m, &[], &t).unwrap();
        assert_eq!(s.user, "bob");
        assert_eq!(s.database, "bob", "database defaults to the user name");
        assert_eq!(
            s.tracked,
            vec![
                (t.index("DateStyle").unwrap(), "ISO".into()),
                (t.index("application_name").unwrap(), "psql".into())
            ]
        );
    }

    #[test]
    fn unknown_parameters_are_refused_unless_ignored() {
        let t = tracked();
        let m = msg(&[
            ("user", "u"),
            ("database", "d"),
            ("extra_float_digits", "3"),
        ]);
        assert_eq!(
            process(&m, &[], &t).unwrap_err(),
            "unsupported startup parameter: extra_float_digits"
        );
        assert!(process(&m, &["extra_float_digits".into()], &t).is_ok());
        assert_eq!(
            process(&msg(&[("database", "d")]), &[], &t).unwrap_err(),
            "no username supplied"
        );
        assert!(process(&msg(&[("user", "u"), ("replication", "database")]), &[], &t).is_err());
        assert!(process(&msg(&[("user", "u"), ("replication", "false")]), &[], &t).is_ok());
    }

    #[test]
    fn options_follow_the_same_rules() {
        let t = tracked();
        let m = msg(&[
            ("user", "u"),
            (
                "options",
                "-c DateStyle=ISO --intervalstyle=iso_8601 -c\\ x",
            ),
        ]);
        let err = process(&m, &[], &t).unwrap_err();
        assert!(
            err.starts_with("unsupported options startup parameter"),
            "{err}"
        );
        let m = msg(&[
            ("user", "u"),
            ("options", "-c DateStyle=ISO --intervalstyle=iso_8601"),
        ]);
        let s = process(&m, &[], &t).unwrap();
        assert_eq!(s.tracked.len(), 2);
        let m = msg(&[
            ("user", "u"),
            (
                "options",
                "-c default_transaction_read_only=on -c statement_timeout=30000",
            ),
        ]);
        assert_eq!(
            process(&m, &[], &t).unwrap_err(),
            "unsupported startup parameter in options: default_transaction_read_only"
        );
        assert!(
            process(&m, &["options".into()], &t).is_ok(),
            "ignoring options ignores what it carries"
        );
        assert!(
            process(
                &m,
                &[
                    "default_transaction_read_only".into(),
                    "statement_timeout".into()
                ],
                &t
            )
            .is_ok()
        );
    }

    #[test]
    fn option_words_honour_backslash_escapes() {
        assert_eq!(
            split_options(r"-c  a=b\ c -cx=y"),
            vec!["-c", "a=b c", "-cx=y"]
        );
    }
}
