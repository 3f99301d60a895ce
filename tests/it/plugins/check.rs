//! `pgwarden --check` with plugins: it loads them as a start would (compiled and initialised), lists each
//! with its source, databases, order, limits, the hooks it serves and where it is configured, and fails
//! with the plugin's name, file:line and reason when one cannot load.

use std::ffi::OsStr;
use std::time::Duration;

use pgwarden_tests::binary::PgwardenProcess;
use pgwarden_tests::pooler::{free_port, fresh_dir, pgwarden_section, write_config};

use super::support::TESTING;

/// Compiling the testing plugin in a debug build on a busy machine takes seconds.
const LIMIT: Duration = Duration::from_secs(60);

/// Writes a pgbouncer.ini with two aliases, `auth_user` (which brings the automatic auth_query
/// plugin) and these `[pgwarden]` plugin lines; returns (directory, ini path, its text).
fn config(plugins: &str) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, String)> {
    let dir = fresh_dir("check")?;
    let ini = write_config(
        &dir,
        free_port()?,
        "app = host=127.0.0.1 port=5432 dbname=app\napp_ro = host=127.0.0.1 port=5432 dbname=app",
        &format!(
            "auth_type = md5\nauth_user = lookup\n{}",
            pgwarden_section(plugins)
        ),
        "\"lookup\" \"secret\"\n",
    )?;
    let text = std::fs::read_to_string(&ini)?;
    Ok((dir, ini, text))
}

/// The 1-based line of `ini_text` that starts with `prefix`.
fn line_of(ini_text: &str, prefix: &str) -> usize {
    ini_text
        .lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{ini_text}"))
        + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_the_plugins_it_loaded() -> anyhow::Result<()> {
    let (dir, ini, text) = config(&format!(
        "plugin.readonly.path = builtin:readonly\nplugin.readonly.databases = app_ro\n\
         plugin.testing.path = {TESTING}\nplugin.testing.order = 5\nplugin.testing.hooks = policy,router\n\
         plugin.testing.timeout = 50ms\nplugin.testing.memory_limit = 16MiB\nplugin.testing.on_error = allow\n\
         plugin.router.path = builtin:router\nplugin.router.order = -1\n\
         plugin.router.config.rule.1 = user=x -> deny"
    ))?;
    let out = PgwardenProcess::run(&dir, &[OsStr::new("--check"), ini.as_os_str()], LIMIT).await?;
    assert!(out.status.success(), "{out:?}");
    let at = |prefix: &str| format!("{}:{}", ini.display(), line_of(&text, prefix));
    for expected in [
        "plugins (in run order):".to_owned(),
        format!(
            "  router -> builtin:router  databases=* order=-1 on_error=deny timeout=100ms \
             memory_limit=128MiB; hooks: router; configured at {}",
            at("plugin.router.path")
        ),
        format!(
            "  readonly -> builtin:readonly  databases=app_ro order=0 on_error=deny timeout=100ms \
             memory_limit=128MiB; hooks: policy; configured at {}",
            at("plugin.readonly.path")
        ),
        format!(
            "  testing -> {TESTING}  databases=* order=5 on_error=allow timeout=50ms \
             memory_limit=16MiB; hooks: router,policy; configured at {}",
            at("plugin.testing.path")
        ),
    ] {
        assert!(
            out.stdout.lines().any(|l| l == expected),
            "missing {expected:?} in\n{}",
            out.stdout
        );
    }
    // The automatic auth-query plugin, from auth_user.
    assert!(
        out.stdout.lines().any(|l| l
            .starts_with("  auth_query -> builtin:auth-query  databases=* ")
            && l.contains("; hooks: auth; configured at ")),
        "{}",
        out.stdout
    );
    // Run order: router (-1), then the order-0 ones by name, then testing (5).
    let names: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "plugins (in run order):")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.trim_start().split(' ').next())
        .collect();
    assert_eq!(
        names,
        ["router", "auth_query", "readonly", "testing"],
        "{}",
        out.stdout
    );
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

/// A plugin that cannot load (a missing file, an init refusing its configuration) fails `--check` (exit
/// status 1) with its name, file:line and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_on_a_plugin_that_cannot_load() -> anyhow::Result<()> {
    for (lines, said) in [
        (
            "plugin.broken.path = /nonexistent/broken.wasm".to_owned(),
            "/nonexistent/broken.wasm",
        ),
        (
            "plugin.broken.path = builtin:readonly\nplugin.broken.config.mesage = typo".to_owned(),
            "unknown configuration key `mesage`",
        ),
    ] {
        let (dir, ini, text) = config(&lines)?;
        let out =
            PgwardenProcess::run(&dir, &[OsStr::new("--check"), ini.as_os_str()], LIMIT).await?;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let origin = format!("{}:{}", ini.display(), line_of(&text, "plugin.broken.path"));
        assert!(
            out.stderr.contains(&origin)
                && out.stderr.contains("plugin \"broken\"")
                && out.stderr.contains(said),
            "{lines}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains(": OK"), "{}", out.stdout);
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
