use super::*;

pub(crate) fn session(user: &str, database: &str, app: &str, client_ip: &str) -> SessionInfo {
    SessionInfo {
        user: user.to_string(),
        database: database.to_string(),
        application_name: app.to_string(),
        client_address: if client_ip.is_empty() {
            "unix".to_string()
        } else {
            format!("{client_ip}:50000")
        },
        client_ip: client_ip.to_string(),
        tls: false,
        startup_parameters: vec![("user".to_string(), user.to_string())],
        pool_mode: PoolMode::Transaction,
        in_transaction: false,
    }
}

fn config(pairs: &[(&str, &str)]) -> Config {
    Config::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn rule(text: &str) -> Rule {
    parse_rule("rule.1", 1, text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn error(text: &str) -> String {
    match parse_rule("rule.1", 1, text) {
        Ok(rule) => panic!("{text} parsed as {rule:?}"),
        Err(e) => e,
    }
}

#[test]
fn runbook_rule() {
    let r = rule("user=analytics_ro -> database=tracksolid_db_ro pool_mode=session");
    assert_eq!(
        r.outcome,
        Outcome::Route(Destination {
            database: Some("tracksolid_db_ro".to_string()),
            pool_mode: Some(PoolMode::Session),
            server_user: None,
        })
    );
    assert!(r.matches(&session("analytics_ro", "tracksolid_db", "", "10.0.0.5")));
    assert!(!r.matches(&session("analytics_rw", "tracksolid_db", "", "10.0.0.5")));
}

#[test]
fn all_route_actions() {
    let r = rule("* -> database=reports pool_mode=Transaction server_user=reporter");
    assert_eq!(
        r.outcome,
        Outcome::Route(Destination {
            database: Some("reports".to_string()),
            pool_mode: Some(PoolMode::Transaction),
            server_user: Some("reporter".to_string()),
        })
    );
    assert_eq!(
        rule("-> pool_mode=statement").outcome,
        Outcome::Route(Destination {
            database: None,
            pool_mode: Some(PoolMode::Statement),
            server_user: None,
        })
    );
}

#[test]
fn empty_conditions_match_everyone() {
    for text in ["* -> deny", "-> deny"] {
        let r = rule(text);
        assert!(r.matches(&session("a", "b", "c", "")));
        assert!(r.matches(&session("x", "y", "", "2001:db8::1")));
    }
}

#[test]
fn deny_defaults_and_overrides() {
    let r = rule("user=guest -> deny");
    let Outcome::Deny(d) = r.outcome else {
        panic!("not a denial")
    };
    assert_eq!(d.sqlstate, "28000");
    assert_eq!(d.message, "connection refused by pgwarden router (rule.1)");
    assert_eq!((d.detail, d.hint), (None, None));

    let r = rule(
        r#"user=guest -> deny message="guests may not connect" sqlstate=42501 detail="" hint="ask for an account""#,
    );
    let Outcome::Deny(d) = r.outcome else {
        panic!("not a denial")
    };
    assert_eq!(d.sqlstate, "42501");
    assert_eq!(d.message, "guests may not connect");
    assert_eq!(d.detail.as_deref(), Some(""));
    assert_eq!(d.hint.as_deref(), Some("ask for an account"));
}

#[test]
fn conditions_all_must_hold() {
    let r = rule("user=app_* database=shop application_name=web? client=10.0.0.0/8 -> deny");
    assert!(r.matches(&session("app_1", "shop", "web1", "10.1.1.1")));
    assert!(!r.matches(&session("bpp_1", "shop", "web1", "10.1.1.1")));
    assert!(!r.matches(&session("app_1", "shop2", "web1", "10.1.1.1")));
    assert!(!r.matches(&session("app_1", "shop", "web12", "10.1.1.1")));
    assert!(!r.matches(&session("app_1", "shop", "web1", "11.1.1.1")));
    assert!(!r.matches(&session("app_1", "shop", "web1", "")));
}

#[test]
fn alternatives_any_may_match() {
    let r = rule("user=alice,bob,*_admin client=unix,127.0.0.1,::1 -> deny");
    assert!(r.matches(&session("alice", "d", "", "")));
    assert!(r.matches(&session("bob", "d", "", "127.0.0.1")));
    assert!(r.matches(&session("db_admin", "d", "", "::1")));
    assert!(!r.matches(&session("carol", "d", "", "")));
    assert!(!r.matches(&session("alice", "d", "", "127.0.0.2")));
}

#[test]
fn client_v6_and_mapped() {
    let r = rule("client=2001:db8::/32 -> deny");
    assert!(r.matches(&session("u", "d", "", "2001:db8:1::5")));
    assert!(!r.matches(&session("u", "d", "", "2001:db9::5")));
    let r = rule("client=192.168.0.0/16 -> deny");
    assert!(r.matches(&session("u", "d", "", "::ffff:192.168.3.4")));
}

#[test]
fn application_name_may_be_empty_or_quoted() {
    let r = rule(r#"application_name="" -> deny"#);
    assert!(r.matches(&session("u", "d", "", "")));
    assert!(!r.matches(&session("u", "d", "psql", "")));
    let r = rule(r#"application_name="Report Builder *" -> pool_mode=session"#);
    assert!(r.matches(&session("u", "d", "Report Builder 2.1", "")));
    assert!(!r.matches(&session("u", "d", "report builder 2.1", "")));
}

#[test]
fn syntax_errors_are_explained() {
    let cases = [
        ("user=a", "exactly one `->`"),
        ("user=a -> deny -> deny", "exactly one `->`"),
        ("user=a ->", "no action"),
        ("usr=a -> deny", "unknown condition `usr`"),
        ("user -> deny", "needs a value"),
        ("user= -> deny", "empty value"),
        ("user=a,,b -> deny", "empty value"),
        ("user=a user=b -> deny", "given twice"),
        ("* user=a -> deny", "cannot be combined"),
        ("client=10.0.0.1/8 -> deny", "10.0.0.0/8"),
        ("client=nowhere -> deny", "not an IP address"),
        ("user=a -> databse=x", "unknown action `databse`"),
        ("user=a -> database", "needs a value"),
        ("user=a -> database=", "empty value"),
        ("user=a -> database=x,y", "takes one value"),
        ("user=a -> pool_mode=sometimes", "not one of session"),
        ("user=a -> deny database=x", "cannot be combined"),
        ("user=a -> deny=yes", "takes no value"),
        ("user=a -> database=x message=hi", "only go with `deny`"),
        ("user=a -> deny sqlstate=2800", "not a SQLSTATE"),
        ("user=a -> deny sqlstate=28p01", "not a SQLSTATE"),
        ("user=a -> deny deny", "given twice"),
        (r#"user=a -> deny message="open"#, "unterminated"),
    ];
    for (text, expected) in cases {
        let err = error(text);
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn quoted_message_with_comma_is_one_value() {
    let r = rule(r#"user=a -> deny message="no, not you""#);
    let Outcome::Deny(d) = r.outcome else {
        panic!("not a denial")
    };
    assert_eq!(d.message, "no, not you");
}

#[test]
fn rules_sorted_numerically_and_named_in_errors() {
    let rules = parse_rules(&config(&[
        ("rule.10", "user=c -> deny"),
        ("rule.2", "user=b -> deny"),
        ("rule.1", "user=a -> deny"),
    ]))
    .unwrap();
    let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["rule.1", "rule.2", "rule.10"]);

    let err = parse_rules(&config(&[
        ("rule.1", "user=a -> deny"),
        ("rule.7", "user=a"),
    ]))
    .unwrap_err();
    assert!(err.starts_with("rule.7: "), "{err}");
}

#[test]
fn bad_rule_keys() {
    for key in ["rule.", "rule.x", "rule.1a", "rule.-1", "rule. 1"] {
        let err = parse_rules(&config(&[(key, "* -> deny")])).unwrap_err();
        assert!(err.contains("rule.N"), "{key}: {err}");
    }
    let err = parse_rules(&config(&[("rules.1", "* -> deny")])).unwrap_err();
    assert!(err.contains("unknown configuration key `rules.1`"), "{err}");
    let err = parse_rules(&config(&[
        ("rule.1", "* -> deny"),
        ("rule.01", "* -> deny"),
    ]))
    .unwrap_err();
    assert!(err.contains("same number"), "{err}");
}

#[test]
fn no_rules_is_valid() {
    assert_eq!(parse_rules(&Config::default()), Ok(Vec::new()));
}
