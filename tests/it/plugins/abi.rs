//! ABI versions: a component built for `pgwarden:plugin@0.1.0` (before `handles` and `query-policy` were
//! added in 0.1.1) still loads and serves every hook. The `testing` plugin, built for 0.1.1 but using
//! nothing 0.1.1 added, is renamed to 0.1.0: its imports and exports then read exactly as a component
//! built against the 0.1.0 WIT does.

use std::time::Duration;

use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, fresh_dir};
use tokio_postgres::Config;

use super::support::{TESTING, assert_error, plugin};
use crate::pool_support::{assert_login_refused, entry, scalar};

const PREFIX: &[u8] = b"pgwarden:plugin/";

/// `component` with every `pgwarden:plugin/<interface>@0.1.1` name turned into `@0.1.0` (same length,
/// so the binary stays well-formed); the number of names changed.
fn as_0_1_0(component: &[u8]) -> (Vec<u8>, usize) {
    let mut out = component.to_vec();
    let mut renamed = 0;
    let mut at = 0;
    while let Some(found) = out[at..].windows(PREFIX.len()).position(|w| w == PREFIX) {
        let mut end = at + found + PREFIX.len();
        while end < out.len() && (out[end].is_ascii_lowercase() || out[end] == b'-') {
            end += 1;
        }
        if out[end..].starts_with(b"@0.1.1") {
            out[end + 5] = b'0';
            renamed += 1;
        }
        at = end;
    }
    (out, renamed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_for_0_1_0_serves_every_hook() -> anyhow::Result<()> {
    let (bytes, renamed) = as_0_1_0(&std::fs::read(TESTING)?);
    assert!(renamed >= 5, "only {renamed} names renamed");
    let text = String::from_utf8_lossy(&bytes);
    for name in ["init", "policy", "router", "auth", "log"] {
        let versioned = format!("pgwarden:plugin/{name}@0.1.0");
        assert!(text.contains(&versioned), "{versioned} missing");
    }
    assert!(!text.contains("@0.1.1"), "a name still reads 0.1.1");
    let dir = fresh_dir("abi_0_1_0")?;
    let path = dir.join("testing-0.1.0.wasm");
    std::fs::write(&path, &bytes)?;

    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_abi", PasswordEncryption::Md5)?;
    let pooler = Pooler::start_with_plugins(
        &entry(pg, &db, ""),
        "pool_mode = transaction\nauth_type = md5",
        &db.userlist_line(),
        &format!(
            "plugin.old.path = {}\nplugin.old.hooks = policy,router",
            path.display()
        ),
    )
    .await?;
    let old = plugin(&pooler, "old")?;

    // policy: an ordinary query passes, the deny trigger is refused with the plugin's own error.
    let client = pooler.connect_as(&db).await?;
    assert_eq!(scalar(&client, "SELECT 'fine'").await?, "fine");
    assert_error(
        client.simple_query("SELECT 'pgwarden_test_deny'").await,
        "42501",
        "denied by testing plugin",
        "the deny trigger",
    );
    assert_eq!(scalar(&client, "SELECT 'still fine'").await?, "still fine");

    // router: the deny trigger in application_name refuses the login.
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name)
        .application_name("pgwarden_test_deny")
        .connect_timeout(Duration::from_secs(10));
    let err = pgwarden_tests::clients::connect_config(&config)
        .await
        .err()
        .unwrap_or_else(|| panic!("connected despite the router's refusal"));
    assert_login_refused(&err, "28000", "routing refused by testing plugin");

    let calls = old.stats.calls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(calls >= 5, "{calls} calls");
    Ok(())
}
