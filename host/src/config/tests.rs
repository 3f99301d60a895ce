//! End-to-end tests of the ini front-end through `load`, on real files in temp directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A unique scratch directory, removed on drop.
pub(super) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("pgwarden-config-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// Writes `name` (creating parent directories) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dirs");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn ok(path: &Path) -> Loaded {
    load(path).unwrap_or_else(|e| panic!("expected {} to load, got:\n{e}", path.display()))
}

pub(super) fn errors(path: &Path) -> Vec<Diagnostic> {
    match load(path) {
        Ok(loaded) => panic!("expected errors, loaded {:?}", loaded.config),
        Err(e) => e.diagnostics,
    }
}

/// Finds the one diagnostic about `key`.
pub(super) fn about<'a>(diags: &'a [Diagnostic], key: &str) -> &'a Diagnostic {
    let found: Vec<&Diagnostic> = diags
        .iter()
        .filter(|d| d.key.as_deref() == Some(key))
        .collect();
    assert_eq!(found.len(), 1, "diagnostics about {key}: {diags:#?}");
    found[0]
}

/// Settings that load with a "not implemented yet" warning because the feature they belong to has an
/// open issue (auth_query). Tests about other warnings ignore these.
pub(super) const PLANNED: &[&str] = &["auth_user", "auth_query", "auth_dbname"];

/// Warnings other than the planned-feature ones.
pub(super) fn unplanned(warnings: &[Diagnostic]) -> Vec<&Diagnostic> {
    warnings
        .iter()
        .filter(|w| !w.key.as_deref().is_some_and(|k| PLANNED.contains(&k)))
        .collect()
}

#[test]
fn admin_users_load_without_warning() {
    let dir = TempDir::new("planned");
    let users = dir.write("userlist.txt", RUNBOOK_USERLIST);
    let ini = dir.write("pgbouncer.ini", &runbook_ini(&users));
    let loaded = ok(&ini);
    assert_eq!(
        loaded.config.settings.admin_users,
        vec!["postgres".to_owned()]
    );
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
}

pub(super) const RUNBOOK_USERLIST: &str = "\"admin\" \"password123\"\n\"user\" \"password\"\n";

pub(super) fn runbook_ini(auth_file: &Path) -> String {
    format!(
        "[databases]\n\
         db = host=localhost port=5432 dbname=postgres\n\
         [pgbouncer]\n\
         listen_addr = *\n\
         listen_port = 6432\n\
         auth_type = md5\n\
         auth_file = {}\n\
         pool_mode = transaction\n\
         default_pool_size = 20\n\
         max_client_conn = 200\n\
         ignore_startup_parameters = extra_float_digits\n\
         # Log settings\n\
         admin_users = postgres\n",
        auth_file.display()
    )
}

#[test]
fn runbook_config_loads_exactly() {
    let dir = TempDir::new("runbook1");
    let users = dir.write("userlist.txt", RUNBOOK_USERLIST);
    let ini = dir.write("pgbouncer.ini", &runbook_ini(&users));
    let loaded = ok(&ini);
    assert!(
        unplanned(&loaded.warnings).is_empty(),
        "{:#?}",
        loaded.warnings
    );
    let c = loaded.config;

    let settings = Settings {
        listen_addr: vec!["*".into()],
        listen_port: 6432,
        auth_type: AuthType::Md5,
        auth_file: Some(users.clone()),
        pool_mode: PoolMode::Transaction,
        default_pool_size: 20,
        max_client_conn: 200,
        ignore_startup_parameters: vec!["extra_float_digits".into()],
        admin_users: vec!["postgres".into()],
        ..Settings::default()
    };
    assert_eq!(c.settings, settings);

    let mut db = Database::new("db");
    db.host = vec!["localhost".into()];
    db.port = 5432;
    db.dbname = Some("postgres".into());
    assert_eq!(c.databases.len(), 1);
    assert_eq!(c.databases["db"], db);
    assert_eq!(c.fallback, None);
    assert!(c.users.is_empty());
    assert!(c.plugins.is_empty());
    assert_eq!(c.path, ini);

    let auth = c.auth_file.expect("auth file loaded");
    assert_eq!(auth.path, users);
    assert_eq!(auth.entries.len(), 2);
    assert_eq!(auth.entries["admin"], "password123");
    assert_eq!(auth.entries["user"], "password");
}

pub(super) const RUNBOOK2_USERLIST: &str = "\"pgbouncer_auth\" \"SCRAM-SHA-256$4096:c2FsdA==$abc=:def=\"\n\"app\" \"md5d41d8cd98f00b204e9800998ecf8427e\"\n";

pub(super) fn runbook2_ini(auth_file: &Path) -> String {
    format!(
        "[databases]\n\
         tracksolid_db = host=timescale_db port=5432 dbname=tracksolid_db\n\
         tsdb_ro = host=timescale_db port=5432 dbname=tracksolid_db pool_mode=session\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 0.0.0.0\n\
         listen_port = 6432\n\
         auth_type = scram-sha-256\n\
         auth_file = {}\n\
         auth_user = pgbouncer_auth\n\
         auth_query = SELECT usename, passwd FROM pgbouncer.user_lookup($1)\n\
         pool_mode = transaction\n\
         default_pool_size = 25\n\
         reserve_pool_size = 5\n\
         max_client_conn = 500\n",
        auth_file.display()
    )
}

#[test]
fn runbook_config_with_auth_query_and_alias_loads() {
    let dir = TempDir::new("runbook2");
    let users = dir.write("userlist.txt", RUNBOOK2_USERLIST);
    let ini = dir.write("pgbouncer.ini", &runbook2_ini(&users));
    let loaded = ok(&ini);
    assert!(
        unplanned(&loaded.warnings).is_empty(),
        "{:#?}",
        loaded.warnings
    );
    let c = loaded.config;
    assert_eq!(c.settings.auth_type, AuthType::ScramSha256);
    assert_eq!(c.settings.auth_user.as_deref(), Some("pgbouncer_auth"));
    assert_eq!(
        c.settings.auth_query,
        "SELECT usename, passwd FROM pgbouncer.user_lookup($1)"
    );
    assert_eq!(c.settings.reserve_pool_size, 5);
    assert_eq!(c.settings.default_pool_size, 25);
    assert_eq!(c.settings.max_client_conn, 500);
    assert_eq!(c.settings.listen_addr, vec!["0.0.0.0".to_owned()]);
    let ro = &c.databases["tsdb_ro"];
    assert_eq!(ro.host, vec!["timescale_db".to_owned()]);
    assert_eq!(ro.dbname.as_deref(), Some("tracksolid_db"));
    assert_eq!(ro.pool_mode, Some(PoolMode::Session));
    assert_eq!(c.databases["tracksolid_db"].pool_mode, None);
    let auth = c.auth_file.expect("auth file");
    assert_eq!(
        auth.entries["pgbouncer_auth"],
        "SCRAM-SHA-256$4096:c2FsdA==$abc=:def="
    );
    assert_eq!(auth.entries["app"], "md5d41d8cd98f00b204e9800998ecf8427e");
}

#[test]
fn every_error_is_collected_with_file_line_and_key() {
    let dir = TempDir::new("errors");
    let ini = dir.write(
        "bad.ini",
        "[pgbouncer]\n\
         listen_port = 99999\n\
         no_such_thing = 1\n\
         pool_mode = sometimes\n\
         log_stats = maybe\n\
         query_timeout = 5 weeks\n\
         unix_socket_mode = 0999\n\
         auth_type = trust\n\
         listen_addr\n\
         [databases]\n\
         a = host=x bogus=1\n\
         b = host=x port=abc\n\
         pgbouncer = host=x\n\
         c = host=x pool_mode='weird'\n\
         d = host\n\
         [users]\n\
         u = pool_size=many\n\
         v = frobnicate=1\n\
         [nonsense]\n",
    );
    let errs = errors(&ini);
    let expect = [
        (
            2,
            "listen_port",
            "invalid value \"99999\": expected an integer from 1 to 65535",
        ),
        (3, "no_such_thing", "unknown setting"),
        (
            4,
            "pool_mode",
            "invalid value \"sometimes\": expected one of session, transaction or statement",
        ),
        (5, "log_stats", "invalid value \"maybe\""),
        (
            6,
            "query_timeout",
            "invalid value \"5 weeks\": expected a duration",
        ),
        (7, "unix_socket_mode", "invalid value \"0999\""),
        (9, "listen_addr", "expected \"=\" after \"listen_addr\""),
        (11, "bogus", "unknown parameter for database \"a\""),
        (12, "port", "invalid value \"abc\" for database \"b\""),
        (13, "pgbouncer", "reserved for the admin console"),
        (
            14,
            "pool_mode",
            "invalid value \"weird\" for database \"c\"",
        ),
        (15, "host", "database \"d\": expected key=value"),
        (17, "pool_size", "invalid value \"many\" for user \"u\""),
        (18, "frobnicate", "unknown parameter for user \"v\""),
        (19, "nonsense", "unknown section [nonsense]"),
    ];
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    for ((line, key, text), e) in expect.iter().zip(&errs) {
        assert_eq!(e.file, ini);
        assert_eq!(e.line, Some(*line), "{e}");
        assert_eq!(e.key.as_deref(), Some(*key), "{e}");
        assert!(e.message.contains(text), "{e} should contain {text}");
    }
    let shown = ConfigError { diagnostics: errs }.to_string();
    assert_eq!(shown.lines().count(), expect.len());
    assert!(
        shown.starts_with(&format!("{}:2: listen_port: invalid value", ini.display())),
        "{shown}"
    );
}

#[test]
fn includes_nest_resolve_relatively_and_keep_the_section() {
    let dir = TempDir::new("include");
    dir.write(
        "conf.d/dbs.ini",
        "; databases continue the includer's section\n\
         db1 = host=h1\n\
         %include more/dbs2.ini\n",
    );
    dir.write(
        "conf.d/more/dbs2.ini",
        "db2 = host=h2\n[pgbouncer]\nlisten_port = 7000\n",
    );
    let main = dir.write(
        "main.ini",
        "[databases]\n\
         %include conf.d/dbs.ini\n\
         max_client_conn = 55\n\
         [users]\n\
         u = pool_mode=statement\n",
    );
    let c = ok(&main).config;
    assert_eq!(c.databases["db1"].host, vec!["h1".to_owned()]);
    assert_eq!(c.databases["db2"].host, vec!["h2".to_owned()]);
    assert_eq!(c.settings.listen_port, 7000);
    // The section opened inside the include is still current after it.
    assert_eq!(c.settings.max_client_conn, 55);
    assert_eq!(c.users["u"].pool_mode, Some(PoolMode::Statement));
}

#[test]
fn errors_in_included_files_name_that_file_and_line() {
    let dir = TempDir::new("include-err");
    let inc = dir.write("inc.ini", "\n\nlisten_port = zero\n");
    let main = dir.write(
        "main.ini",
        "[pgbouncer]\n%include inc.ini\n%include missing.ini\n",
    );
    let errs = errors(&main);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        (errs[0].file.as_path(), errs[0].line),
        (inc.as_path(), Some(3))
    );
    assert_eq!(errs[0].key.as_deref(), Some("listen_port"));
    assert_eq!(
        (errs[1].file.as_path(), errs[1].line),
        (main.as_path(), Some(3))
    );
    assert!(errs[1].message.contains("missing.ini"), "{}", errs[1]);
    assert_eq!(errs[1].key.as_deref(), Some("%include"));
}

#[test]
fn include_cycles_are_detected() {
    let dir = TempDir::new("cycle");
    let a = dir.write("a.ini", "[pgbouncer]\n%include b.ini\n");
    let b = dir.write("b.ini", "listen_port = 7001\n%include a.ini\n");
    let errs = errors(&a);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].file.as_path(), errs[0].line),
        (b.as_path(), Some(2))
    );
    assert!(errs[0].message.starts_with("include cycle:"), "{}", errs[0]);
    let self_loop = dir.write("self.ini", "[pgbouncer]\n%include self.ini\n");
    let errs = errors(&self_loop);
    assert!(errs[0].message.starts_with("include cycle:"), "{}", errs[0]);
}

#[test]
fn quoting_in_names_and_connection_strings() {
    let dir = TempDir::new("quoting");
    let ini = dir.write(
        "q.ini",
        "[pgbouncer]\n\
         auth_type = trust\n\
         auth_user = a\n\
         [databases]\n\
         \"my db\" = host=x connect_query='SELECT 1' password='it''s'\n\
         \"we\"\"ird\" = host=/var/run/postgresql,h2 load_balance_hosts=disable\n\
         'single' = dbname=other application_name='my app'\n\
         DB = port=6000\n\
         db = port=6001\n",
    );
    let c = ok(&ini).config;
    let my = &c.databases["my db"];
    assert_eq!(my.connect_query.as_deref(), Some("SELECT 1"));
    assert_eq!(my.password.as_deref(), Some("it's"));
    let weird = &c.databases["we\"ird"];
    assert_eq!(
        weird.host,
        vec!["/var/run/postgresql".to_owned(), "h2".to_owned()]
    );
    assert_eq!(weird.load_balance_hosts, LoadBalanceHosts::Disable);
    assert_eq!(
        c.databases["single"].application_name.as_deref(),
        Some("my app")
    );
    assert_eq!(c.databases["single"].dbname.as_deref(), Some("other"));
    // Database names are case-sensitive.
    assert_eq!(
        (c.databases["DB"].port, c.databases["db"].port),
        (6000, 6001)
    );
}

#[test]
fn keys_are_case_insensitive_and_comments_only_start_lines() {
    let dir = TempDir::new("case");
    let ini = dir.write(
        "c.ini",
        "  ; leading comment\n\
         [PgBouncer] ; trailing comment on a header\n\
         Listen_Port = 7002\n\
         # another comment\n\
         auth_query = SELECT 1 # not a comment ; nor this\n\
         auth_user = x\n",
    );
    let c = ok(&ini).config;
    assert_eq!(c.settings.listen_port, 7002);
    assert_eq!(c.settings.auth_query, "SELECT 1 # not a comment ; nor this");
}

#[test]
fn duplicate_settings_warn_and_last_wins() {
    let dir = TempDir::new("dup");
    let ini = dir.write(
        "d.ini",
        "[pgbouncer]\nauth_user = x\nlisten_port = 1000\nlisten_port = 2000\n[databases]\na = port=1\na = port=2 port=3\n",
    );
    let loaded = ok(&ini);
    assert_eq!(loaded.config.settings.listen_port, 2000);
    assert_eq!(loaded.config.databases["a"].port, 3);
    let w = about(&loaded.warnings, "listen_port");
    assert_eq!(w.line, Some(4));
    assert!(w.message.contains(&format!("{}:3", ini.display())), "{w}");
    assert_eq!(about(&loaded.warnings, "a").line, Some(7));
    assert_eq!(about(&loaded.warnings, "port").line, Some(7));
}

#[test]
fn unimplemented_settings_warn_only_when_changed() {
    let dir = TempDir::new("unimpl");
    let ini = dir.write(
        "u.ini",
        "[pgbouncer]\nauth_user = x\nsyslog = 1\nsyslog_ident = pgbouncer\npkt_buf = 8192\nclient_tls_key_file = /k.pem\n",
    );
    let loaded = ok(&ini);
    let keys: Vec<(&str, Option<u32>)> = unplanned(&loaded.warnings)
        .into_iter()
        .map(|w| (w.key.as_deref().unwrap_or(""), w.line))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("syslog", Some(3)),
            ("pkt_buf", Some(5)),
            ("client_tls_key_file", Some(6))
        ]
    );
    assert_eq!(
        unplanned(&loaded.warnings)[0].to_string(),
        format!(
            "{}:3: syslog: not implemented by pgwarden yet; ignored",
            ini.display()
        )
    );
    assert!(loaded.config.settings.syslog);
}

#[test]
fn unsupported_auth_and_tls_modes_are_errors() {
    let dir = TempDir::new("unsupported");
    let ini = dir.write(
        "x.ini",
        "[pgbouncer]\nauth_type = hba\nclient_tls_sslmode = require\nserver_tls_sslmode = verify-full\n",
    );
    let errs = errors(&ini);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    let e = about(&errs, "auth_type");
    assert_eq!(
        (e.line, e.message.as_str()),
        (Some(2), "auth_type = hba is not supported by pgwarden")
    );
    let e = about(&errs, "client_tls_sslmode");
    assert_eq!(e.line, Some(3));
    assert!(
        e.message.contains("TLS is not supported by pgwarden yet"),
        "{e}"
    );
    assert_eq!(about(&errs, "server_tls_sslmode").line, Some(4));

    for auth in ["cert", "pam", "ldap"] {
        let ini = dir.write("y.ini", &format!("[pgbouncer]\nauth_type = {auth}\n"));
        let e = &errors(&ini)[0];
        assert_eq!(
            e.message,
            format!("auth_type = {auth} is not supported by pgwarden")
        );
    }
}

#[test]
fn client_tls_allow_or_prefer_only_warns() {
    let dir = TempDir::new("tlswarn");
    for mode in ["allow", "prefer"] {
        let ini = dir.write(
            "t.ini",
            &format!("[pgbouncer]\nauth_user = x\nclient_tls_sslmode = {mode}\n"),
        );
        let loaded = ok(&ini);
        let w = about(&loaded.warnings, "client_tls_sslmode");
        assert_eq!(w.line, Some(3));
        assert!(
            w.message.contains("TLS is not supported by pgwarden yet"),
            "{w}"
        );
    }
    let ini = dir.write(
        "s.ini",
        "[pgbouncer]\nauth_user = x\nserver_tls_sslmode = allow\n",
    );
    assert!(unplanned(&ok(&ini).warnings).is_empty());
}

#[test]
fn auth_type_any_needs_forced_users() {
    let dir = TempDir::new("any");
    let ini = dir.write(
        "a.ini",
        "[pgbouncer]\nauth_type = any\n[databases]\nok = user=app\nbad = host=x\n* = host=y\n",
    );
    let errs = errors(&ini);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs.iter().all(|e| e.key.as_deref() == Some("user")));
    let lines: Vec<Option<u32>> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![Some(5), Some(6)]);
    assert!(errs[0].message.contains("\"bad\""), "{}", errs[0]);

    let fine = dir.write(
        "b.ini",
        "[pgbouncer]\nauth_type = any\n[databases]\nok = user=app\n",
    );
    let loaded = ok(&fine);
    assert!(
        unplanned(&loaded.warnings).is_empty(),
        "{:#?}",
        loaded.warnings
    );
}

#[test]
fn auth_dbname_must_name_a_database() {
    let dir = TempDir::new("authdb");
    let ini = dir.write(
        "a.ini",
        "[pgbouncer]\nauth_user = x\nauth_dbname = nowhere\n[databases]\nreal = host=x\nother = auth_dbname=gone\n",
    );
    let errs = errors(&ini);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].key.as_deref()),
        (Some(3), Some("auth_dbname"))
    );
    assert_eq!(
        (errs[1].line, errs[1].key.as_deref()),
        (Some(6), Some("auth_dbname"))
    );
    let fine = dir.write(
        "b.ini",
        "[pgbouncer]\nauth_user = x\nauth_dbname = real\n[databases]\nreal = host=x\n",
    );
    assert_eq!(
        ok(&fine).config.settings.auth_dbname.as_deref(),
        Some("real")
    );
}

#[test]
fn missing_password_source_warns() {
    let dir = TempDir::new("nopw");
    let ini = dir.write("a.ini", "[pgbouncer]\nauth_type = scram-sha-256\n");
    let loaded = ok(&ini);
    let w = about(&loaded.warnings, "auth_file");
    assert_eq!((w.file.as_path(), w.line), (ini.as_path(), None));
    // A per-database auth_user is a password source too.
    let ini = dir.write("b.ini", "[pgbouncer]\n[databases]\nd = auth_user=x\n");
    assert!(unplanned(&ok(&ini).warnings).is_empty());
}

#[test]
fn auth_file_problems_name_the_right_file() {
    let dir = TempDir::new("authfile");
    let ini = dir.write("a.ini", "[pgbouncer]\n\nauth_file = nope.txt\n");
    let errs = errors(&ini);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].file.as_path(), errs[0].line),
        (ini.as_path(), Some(3))
    );
    assert_eq!(errs[0].key.as_deref(), Some("auth_file"));

    let users = dir.write("users.txt", "\"ok\" \"1\"\nbroken line\n");
    let ini = dir.write("b.ini", "[pgbouncer]\nauth_file = users.txt\n");
    let errs = errors(&ini);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].file.as_path(), errs[0].line),
        (users.as_path(), Some(2))
    );
}

#[test]
fn relative_auth_file_is_found_beside_the_config() {
    let dir = TempDir::new("relauth");
    let users = dir.write("sub/users.txt", "\"a\" \"b\"\n");
    let inc = "[pgbouncer]\nauth_file = users.txt\n";
    dir.write("sub/auth.ini", inc);
    let ini = dir.write("main.ini", "%include sub/auth.ini\n");
    let c = ok(&ini).config;
    // Relative to the file that set it (the include), not the main file.
    assert_eq!(c.auth_file.map(|a| a.path), Some(users));
    assert_eq!(c.settings.auth_file, Some(PathBuf::from("users.txt")));
}

#[test]
fn sections_peers_pgwarden_and_missing_main() {
    let dir = TempDir::new("sections");
    let ini = dir.write(
        "s.ini",
        "[pgbouncer]\nauth_user = x\n[peers]\n1 = host=/tmp/a\n[pgwarden]\nplugin.ro.path = builtin:readonly\nplugin.ro.config.Message = no writes\n",
    );
    let loaded = ok(&ini);
    let w = about(&loaded.warnings, "1");
    assert_eq!(w.line, Some(4));
    assert!(w.message.contains("not supported by pgwarden yet"), "{w}");
    let ro = loaded
        .config
        .plugins
        .iter()
        .find(|p| p.name == "ro")
        .expect("the ro plugin");
    assert_eq!(
        ro.config,
        vec![("Message".to_owned(), "no writes".to_owned())]
    );
    assert_eq!(ro.line, Some(6));

    let no_main = dir.write("n.ini", "[databases]\na = host=x\n");
    let errs = errors(&no_main);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("[pgbouncer]"), "{}", errs[0]);

    let orphan = dir.write("o.ini", "listen_port = 1\n[pgbouncer]\n");
    let e = &errors(&orphan)[0];
    assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("listen_port")));

    let missing = dir.path("does-not-exist.ini");
    let e = &errors(&missing)[0];
    assert_eq!((e.file.as_path(), e.line), (missing.as_path(), None));
}

#[test]
fn fallback_database_and_lookup() {
    let dir = TempDir::new("fallback");
    let ini = dir.write(
        "f.ini",
        "[pgbouncer]\nauth_user = x\n[databases]\n* = host=foo\nexact = host=bar\n",
    );
    let c = ok(&ini).config;
    let star = c.fallback.clone().expect("fallback");
    assert_eq!(
        (star.name.as_str(), star.host.clone()),
        ("*", vec!["foo".to_owned()])
    );
    assert!(!c.databases.contains_key("*"));
    let auto = c.database("anything").expect("auto db");
    assert_eq!(
        (auto.name.as_str(), auto.dbname.clone()),
        ("anything", None)
    );
    assert_eq!(
        c.database("exact").map(|d| d.host),
        Some(vec!["bar".to_owned()])
    );
}

#[test]
fn special_string_values() {
    let dir = TempDir::new("special");
    let ini = dir.write(
        "s.ini",
        "[pgbouncer]\nauth_user = x\nserver_check_query =\nserver_reset_query =\nunix_socket_dir =\nlisten_addr =\n\
         query_timeout = 500ms\nserver_lifetime = 0.5\nunix_socket_mode = 0600\nverbose = 2\n\
         min_pool_size = 50\ndefault_pool_size = 10\n[databases]\nd = server_lifetime=30 query_wait_timeout=-1\n",
    );
    let c = ok(&ini).config;
    let s = &c.settings;
    assert_eq!(s.server_check_query, None);
    assert_eq!(s.server_reset_query, None);
    assert_eq!(s.unix_socket_dir, None);
    assert!(s.listen_addr.is_empty());
    assert_eq!(s.query_timeout, Duration::from_millis(500));
    assert_eq!(s.server_lifetime, Duration::from_millis(500));
    assert_eq!(s.unix_socket_mode, 0o600);
    assert_eq!(s.verbose, 2);
    // min_pool_size above the pool size is clamped at run time, not refused.
    assert_eq!((s.min_pool_size, s.default_pool_size), (50, 10));
    let d = &c.databases["d"];
    assert_eq!(
        (d.server_lifetime, d.query_wait_timeout),
        (Some(Duration::from_secs(30)), None)
    );
}

#[test]
fn reserved_pgwarden_name_and_users_section() {
    let dir = TempDir::new("reserved");
    let ini = dir.write(
        "r.ini",
        "[pgbouncer]\n[databases]\npgwarden = host=x\n[users]\nanalytics = pool_mode=session max_user_connections=3 query_timeout=2.5\n",
    );
    let e = about(&errors(&ini), "pgwarden").clone();
    assert_eq!(e.line, Some(3));
    let ini = dir.write("ok.ini", "[pgbouncer]\nauth_user = x\n[users]\nanalytics = pool_mode=session max_user_connections=3 query_timeout=2.5\n");
    let u = &ok(&ini).config.users["analytics"];
    assert_eq!(u.pool_mode, Some(PoolMode::Session));
    assert_eq!(u.max_user_connections, Some(3));
    assert_eq!(u.query_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(u.pool_size, None);
}

#[test]
fn byte_order_marks_are_ignored() {
    let dir = TempDir::new("bom");
    let users = dir.write("u.txt", "\u{feff}\"a\" \"b\"\n");
    let ini = dir.write(
        "b.ini",
        &format!("\u{feff}[pgbouncer]\nauth_file = {}\n", users.display()),
    );
    let c = ok(&ini).config;
    assert_eq!(c.auth_file.map(|a| a.entries.len()), Some(1));
}

#[test]
fn a_faulty_database_does_not_cascade() {
    let dir = TempDir::new("cascade");
    let ini = dir.write(
        "c.ini",
        "[pgbouncer]\nauth_user = x\nauth_dbname = authdb\n[databases]\nauthdb = host=x port=nope\n",
    );
    let errs = errors(&ini);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].key.as_deref()),
        (Some(5), Some("port"))
    );
}

#[test]
fn verifier_only_logins_pgwarden_makes_itself_warn_at_load() {
    let dir = TempDir::new("verifier-only");
    let verifier =
        "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$9rB6w5yQJ9Dwz3e6nU4W1d0S0e4n6Zf8h0pQm2yC7xk=:3q2+7w==";
    let users = dir.write(
        "userlist.txt",
        &format!("\"svc\" \"{verifier}\"\n\"pgbouncer_auth\" \"{verifier}\"\n\"plain\" \"pw\"\n"),
    );
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n\
             forced = host=x user=svc\n\
             with_password = host=x user=svc password=secret\n\
             plain_forced = host=x user=plain\n\
             per_client = host=x\n\
             [pgbouncer]\n\
             auth_file = {}\n\
             auth_user = pgbouncer_auth\n",
            users.display()
        ),
    );
    let loaded = ok(&ini);
    let user_warnings: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.key.as_deref() == Some("user"))
        .collect();
    assert_eq!(user_warnings.len(), 1, "{:#?}", loaded.warnings);
    assert_eq!(user_warnings[0].line, Some(2));
    assert!(
        user_warnings[0]
            .message
            .contains("\"forced\" logs in as \"svc\""),
        "{}",
        user_warnings[0]
    );
    let auth_user: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.key.as_deref() == Some("auth_user") && w.message.contains("SCRAM verifier"))
        .collect();
    assert_eq!(auth_user.len(), 1, "{:#?}", loaded.warnings);
    assert_eq!(auth_user[0].line, Some(8));
}

mod plugin_config {
    use super::*;

    const INI: &str = "[pgbouncer]\nauth_type = trust\n\
        [pgwarden]\n\
        plugin_cache_dir = cache\n\
        plugin.ro.path = builtin:readonly\n\
        plugin.ro.databases = analytics, reports\n\
        plugin.ro.order = 5\n\
        plugin.ro.config.message = analytics is read-only\n\
        plugin.route.path = plugins/router.wasm\n\
        plugin.route.hooks = router\n\
        plugin.route.on_error = allow\n\
        plugin.route.timeout = 20ms\n\
        plugin.route.memory_limit = 16MiB\n\
        plugin.route.server_parameters = statement_timeout=5s, work_mem=4MB\n\
        plugin.route.config.rule.1 = user=analytics_ro -> database=ro\n";

    const TOML: &str = "[pgwarden]\nauth_type = \"trust\"\n\
        [plugins]\ncache_dir = \"cache\"\n\
        [plugins.ro]\npath = \"builtin:readonly\"\ndatabases = [\"analytics\", \"reports\"]\norder = 5\n\
        [plugins.ro.config]\nmessage = \"analytics is read-only\"\n\
        [plugins.route]\npath = \"plugins/router.wasm\"\nhooks = [\"router\"]\non_error = \"allow\"\ntimeout = \"20ms\"\n\
        memory_limit = \"16MiB\"\nserver_parameters = [\"statement_timeout=5s\", \"work_mem=4MB\"]\n\
        [plugins.route.config]\n\"rule.1\" = \"user=analytics_ro -> database=ro\"\n";

    #[test]
    fn ini_and_toml_plugins_mean_the_same() {
        let dir = TempDir::new("plugins");
        let ini = ok(&dir.write("p.ini", INI)).config;
        let toml = ok(&dir.write("p.toml", TOML)).config;
        assert_eq!(ini.plugin_cache_dir, Some(dir.0.join("cache")));
        assert_eq!(ini.plugin_cache_dir, toml.plugin_cache_dir);
        assert_eq!(ini.plugins.len(), 2);
        for (a, b) in ini.plugins.iter().zip(&toml.plugins) {
            let mut b = b.clone();
            b.file = a.file.clone();
            b.line = a.line;
            assert_eq!(*a, b);
        }
        let route = &ini.plugins[0];
        assert_eq!(route.name, "route", "order 0 runs before order 5");
        assert_eq!(
            route.source,
            PluginSource::File(dir.0.join("plugins/router.wasm"))
        );
        assert_eq!(route.hooks, Some(vec![Hook::Router]));
        assert_eq!(route.on_error, OnError::Allow);
        assert_eq!(route.timeout, Duration::from_millis(20));
        assert_eq!(route.memory_limit, 16 << 20);
        assert_eq!(
            route.server_parameters,
            vec![
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "4MB".into())
            ]
        );
        assert_eq!(
            route.config,
            vec![("rule.1".into(), "user=analytics_ro -> database=ro".into())]
        );
        let ro = &ini.plugins[1];
        assert_eq!(
            ro.databases,
            Some(vec!["analytics".into(), "reports".into()])
        );
        assert!(ro.applies_to("reports") && !ro.applies_to("app"));
        assert_eq!(ro.on_error, OnError::Deny, "fail closed by default");
        assert_eq!(
            ro.server_parameters,
            vec![("default_transaction_read_only".into(), "on".into())],
            "defence in depth"
        );
    }

    #[test]
    fn plugin_errors_name_file_line_and_key() {
        let dir = TempDir::new("plugin-errors");
        let ini = dir.write(
            "bad.ini",
            "[pgbouncer]\nauth_type = trust\n[pgwarden]\n\
             plugin.a.path = builtin:readonly\n\
             plugin.a.hooks = policy, routing\n\
             plugin.a.memory_limit = 12 parsecs\n\
             plugin.a.colour = blue\n\
             plugin.b.order = 1\n\
             rate_limit = 10\n",
        );
        let errs = errors(&ini);
        let keys: Vec<(Option<u32>, &str)> = errs
            .iter()
            .map(|d| (d.line, d.key.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            keys,
            vec![
                (Some(5), "plugin.a.hooks"),
                (Some(6), "plugin.a.memory_limit"),
                (Some(7), "plugin.a.colour"),
                (Some(8), "plugin.b.path"),
                (Some(9), "rate_limit"),
            ],
            "{errs:#?}"
        );
        assert!(
            errs[0].message.contains("unknown hook \"routing\""),
            "{}",
            errs[0]
        );
        let toml = dir.write(
            "bad.toml",
            "[plugins.a]\npath = \"x.wasm\"\ntimeout = 0\n[plugins]\n",
        );
        let errs = errors(&toml);
        assert!(
            errs.iter()
                .any(|d| d.key.as_deref() == Some("plugin.a.timeout") && d.line == Some(1)),
            "{errs:#?}"
        );
    }

    #[test]
    fn auth_user_loads_the_auth_query_plugin_by_itself() {
        let dir = TempDir::new("autoauth");
        let users = dir.write("u.txt", "\"pgbouncer_auth\" \"secret\"\n");
        let ini = dir.write(
            "a.ini",
            &format!(
                "[databases]\nmain = host=db\nother = host=db auth_user=other_auth auth_dbname=main\n\
                 [pgbouncer]\nauth_file = {}\nauth_user = pgbouncer_auth\n\
                 auth_query = SELECT usename, passwd FROM pgbouncer.user_lookup($1)\n",
                users.display()
            ),
        );
        let loaded = ok(&ini);
        assert!(
            unplanned(&loaded.warnings).is_empty(),
            "{:#?}",
            loaded.warnings
        );
        let [p] = &loaded.config.plugins[..] else {
            panic!("{:#?}", loaded.config.plugins)
        };
        assert_eq!(p.name, AUTO_AUTH);
        assert_eq!(p.source, PluginSource::Builtin("auth-query".into()));
        assert_eq!(p.hooks, Some(vec![Hook::Auth]));
        assert_eq!(
            p.config,
            vec![
                ("auth_user".to_owned(), "pgbouncer_auth".to_owned()),
                (
                    "auth_query".to_owned(),
                    "SELECT usename, passwd FROM pgbouncer.user_lookup($1)".to_owned()
                ),
                (
                    "database.other.auth_user".to_owned(),
                    "other_auth".to_owned()
                ),
                ("database.other.auth_dbname".to_owned(), "main".to_owned()),
            ]
        );
        // A plugin named auth_query replaces the automatic one.
        let own = dir.write(
            "own.ini",
            &format!(
                "[pgbouncer]\nauth_file = {}\nauth_user = pgbouncer_auth\n[pgwarden]\nplugin.auth_query.path = mine.wasm\n",
                users.display()
            ),
        );
        let loaded = ok(&own);
        assert_eq!(loaded.config.plugins.len(), 1);
        assert_eq!(
            loaded.config.plugins[0].source,
            PluginSource::File(dir.0.join("mine.wasm"))
        );
    }
}
