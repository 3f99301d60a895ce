//! End-to-end tests of the TOML front-end, mostly by comparison with the ini front-end.

use std::path::Path;
use std::time::Duration;

use super::tests::{
    RUNBOOK_USERLIST, RUNBOOK2_USERLIST, TempDir, about, errors, ok, runbook_ini, runbook2_ini,
    unplanned,
};
use super::*;

/// Asserts two configs are equal apart from the main file path.
fn assert_same(ini: &Config, toml: &Config) {
    let mut toml = toml.clone();
    toml.path = ini.path.clone();
    // Plugins pgwarden adds by itself (auth_query) record the main file as their origin.
    for p in toml.plugins.iter_mut().filter(|p| p.line.is_none()) {
        p.file = ini.path.clone();
    }
    assert_eq!(*ini, toml);
}

fn toml_escape(path: &Path) -> String {
    path.display().to_string().replace('\\', "\\\\")
}

#[test]
fn runbook_config_in_toml_equals_the_ini_one() {
    let dir = TempDir::new("toml-runbook1");
    let users = dir.write("userlist.txt", RUNBOOK_USERLIST);
    let ini = dir.write("pgbouncer.ini", &runbook_ini(&users));
    let toml = dir.write(
        "pgwarden.toml",
        &format!(
            r#"[databases.db]
host = "localhost"
port = 5432
dbname = "postgres"

[pgwarden]
listen_addr = "*"
listen_port = 6432
auth_type = "md5"
auth_file = "{}"
pool_mode = "transaction"
default_pool_size = 20
max_client_conn = 200
ignore_startup_parameters = ["extra_float_digits"]
# Log settings
admin_users = "postgres"
"#,
            toml_escape(&users)
        ),
    );
    let from_ini = ok(&ini);
    let from_toml = ok(&toml);
    assert!(
        unplanned(&from_toml.warnings).is_empty(),
        "{:#?}",
        from_toml.warnings
    );
    assert_eq!(from_toml.config.path, toml);
    assert_same(&from_ini.config, &from_toml.config);
}

#[test]
fn second_runbook_config_in_toml_equals_the_ini_one() {
    let dir = TempDir::new("toml-runbook2");
    let users = dir.write("userlist.txt", RUNBOOK2_USERLIST);
    let ini = dir.write("pgbouncer.ini", &runbook2_ini(&users));
    let toml = dir.write(
        "pgwarden.toml",
        &format!(
            r#"[pgwarden]
listen_addr = ["0.0.0.0"]
listen_port = 6432
auth_type = "scram-sha-256"
auth_file = "{}"
auth_user = "pgbouncer_auth"
auth_query = "SELECT usename, passwd FROM pgbouncer.user_lookup($1)"
pool_mode = "transaction"
default_pool_size = 25
reserve_pool_size = 5
max_client_conn = 500

[databases.tracksolid_db]
host = "timescale_db"
port = 5432
dbname = "tracksolid_db"

[databases.tsdb_ro]
host = ["timescale_db"]
port = 5432
dbname = "tracksolid_db"
pool_mode = "session"
"#,
            toml_escape(&users)
        ),
    );
    assert_same(&ok(&ini).config, &ok(&toml).config);
}

#[test]
fn typed_and_string_values_mean_the_same() {
    let dir = TempDir::new("toml-types");
    let ini = dir.write(
        "a.ini",
        "[pgbouncer]\nauth_user = x\nreserve_pool_timeout = 0.5\nquery_timeout = 2min\nlog_stats = 0\n\
         unix_socket_mode = 0700\nstats_users = a, b\nserver_check_query = <empty>\n\
         [databases]\n* = host=h1,h2 port=6000 pool_size=7 server_lifetime=60\n\
         [users]\nanalytics = pool_mode=session query_wait_timeout=3\n",
    );
    let toml = dir.write(
        "a.toml",
        r#"[pgwarden]
auth_user = "x"
reserve_pool_timeout = 0.5
query_timeout = "2min"
log_stats = false
unix_socket_mode = "0700"
stats_users = "a, b"
server_check_query = "<empty>"

[databases."*"]
host = "h1,h2"
port = "6000"
pool_size = 7
server_lifetime = 60

[users.analytics]
pool_mode = "session"
query_wait_timeout = 3
"#,
    );
    let (a, b) = (ok(&ini).config, ok(&toml).config);
    assert_same(&a, &b);
    assert_eq!(b.settings.reserve_pool_timeout, Duration::from_millis(500));
    assert_eq!(b.settings.stats_users, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(b.fallback.map(|f| f.pool_size), Some(Some(7)));
}

#[test]
fn unknown_keys_are_rejected_with_line_and_key() {
    let dir = TempDir::new("toml-unknown");
    let toml = dir.write(
        "u.toml",
        "[pgwarden]\nlisten_port = 6432\nlisten_prot = 1\n\n[databases.db]\nhost = \"x\"\nhots = \"y\"\n\n[users.u]\npool = 1\n",
    );
    let errs = errors(&toml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    let e = about(&errs, "listen_prot");
    assert_eq!(
        (e.file.as_path(), e.line, e.message.as_str()),
        (toml.as_path(), Some(3), "unknown setting")
    );
    assert_eq!(about(&errs, "hots").line, Some(7));
    assert_eq!(about(&errs, "pool").line, Some(10));

    let top = dir.write("t.toml", "[pgwarden]\n[pgbouncer]\nlisten_port = 1\n");
    let e = about(&errors(&top), "pgbouncer").clone();
    assert_eq!(e.line, Some(2));
}

#[test]
fn bad_values_are_all_reported() {
    let dir = TempDir::new("toml-bad");
    let toml = dir.write(
        "b.toml",
        r#"[pgwarden]
listen_port = 70000
log_stats = "maybe"
admin_users = [1, 2]
auth_query = 5
unix_socket_mode = 777
server_lifetime = -1

[databases.db]
port = 0
"#,
    );
    let errs = errors(&toml);
    let got: Vec<(Option<u32>, &str)> = errs
        .iter()
        .map(|e| (e.line, e.key.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(2), "listen_port"),
            (Some(3), "log_stats"),
            (Some(4), "admin_users"),
            (Some(5), "auth_query"),
            (Some(6), "unix_socket_mode"),
            (Some(7), "server_lifetime"),
            (Some(10), "port"),
        ]
    );
    assert!(errs[0].message.contains("70000"), "{}", errs[0]);
    assert!(
        errs[2].message.contains("array of non-strings"),
        "{}",
        errs[2]
    );
}

#[test]
fn cross_checks_and_warnings_apply_to_toml_too() {
    let dir = TempDir::new("toml-checks");
    let toml = dir.write(
        "c.toml",
        "[pgwarden]\nauth_type = \"any\"\nclient_tls_sslmode = \"verify-ca\"\n\n[databases.db]\nhost = \"x\"\n",
    );
    let errs = errors(&toml);
    assert_eq!(about(&errs, "client_tls_sslmode").line, Some(3));
    assert_eq!(about(&errs, "user").line, Some(5));

    let warn = dir.write(
        "w.toml",
        "[pgwarden]\nauth_user = \"x\"\nso_reuseport = true\n",
    );
    let loaded = ok(&warn);
    let w = about(&loaded.warnings, "so_reuseport");
    assert_eq!(w.line, Some(3));
    assert_eq!(w.message, "not implemented by pgwarden yet; ignored");
}

#[test]
fn relative_auth_file_is_resolved_beside_the_toml_file() {
    let dir = TempDir::new("toml-auth");
    let users = dir.write("conf/users.txt", "\"u\" \"p\"\n");
    let toml = dir.write("conf/p.toml", "[pgwarden]\nauth_file = \"users.txt\"\n");
    let c = ok(&toml).config;
    assert_eq!(c.auth_file.map(|a| a.path), Some(users));

    let missing = dir.write("conf/m.toml", "[pgwarden]\n\nauth_file = \"none.txt\"\n");
    let e = about(&errors(&missing), "auth_file").clone();
    assert_eq!((e.file, e.line), (missing, Some(3)));
}

#[test]
fn empty_toml_file_is_all_defaults() {
    let dir = TempDir::new("toml-empty");
    let toml = dir.write("e.toml", "");
    let loaded = ok(&toml);
    assert_eq!(loaded.config.settings, Settings::default());
    assert!(loaded.config.databases.is_empty() && loaded.config.plugins.is_empty());
    // md5 with no auth_file and no auth_user: nobody can log in.
    assert_eq!(about(&loaded.warnings, "auth_file").line, None);
}

#[test]
fn extension_picks_the_format() {
    let dir = TempDir::new("toml-ext");
    let upper = dir.write(
        "X.TOML",
        "[pgwarden]\nlisten_port = 7100\nauth_user = \"x\"\n",
    );
    assert_eq!(ok(&upper).config.settings.listen_port, 7100);
    let conf = dir.write("x.conf", "[pgbouncer]\nlisten_port = 7200\nauth_user = x\n");
    assert_eq!(ok(&conf).config.settings.listen_port, 7200);
}
