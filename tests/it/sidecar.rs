//! `examples/sidecar/`: the configuration its containers mount passes `pgwarden --check`; the compose file,
//! the Kubernetes pod and the Dockerfile parse (PyYAML, from the drivers' virtualenv) and agree with that
//! configuration and with what exists (mounted files, ports, probe paths); the image's HEALTHCHECK command
//! really probes a running pgwarden. (SIGTERM's drain with the probes is `process::sigterm_*`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use pgwarden_tests::clients::Python;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, free_port, fresh_dir, pgwarden_bin};

use crate::metrics::wait_status;

fn sidecar() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sidecar")
}

fn ini() -> PathBuf {
    sidecar().join("bouncer/pgbouncer.ini")
}

/// The scalars of YAML files as `yaml_flat.py` prints them: `<file>.<document><path>` → value.
async fn yaml(files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut run = Python::script("yaml_flat.py")?;
    for f in files {
        run = run.arg(f.display().to_string());
    }
    let out = run.run().await?;
    out.ensure_success("yaml_flat.py")?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The value at `key`, which must exist.
fn at<'a>(y: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    y.get(key)
        .unwrap_or_else(|| panic!("no {key} in {y:#?}"))
        .as_str()
}

/// The values of a list at `prefix[0]`, `prefix[1]`, ...
fn list(y: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    (0..)
        .map_while(|i| y.get(&format!("{prefix}[{i}]")).cloned())
        .collect()
}

/// The mounted configuration is valid for pgwarden as it is, and says what the other files rely on:
/// clients on 6432, the HTTP listener on 9127, transaction pooling, the userlist next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_config_passes_check() -> anyhow::Result<()> {
    let out = Command::new(pgwarden_bin()?)
        .arg("--check")
        .arg(ini())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "listen: *:6432, /tmp/.s.PGSQL.6432\n",
        "metrics: *:9127 (GET /metrics, /healthz, /readyz)\n",
        "userlist.txt (3 users)\n",
        "  db -> postgres:5432/postgres  pool_mode=transaction pool_size=20 ",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    let config = pgwarden::config::load(&ini())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .config;
    assert_eq!(config.settings.admin_users, ["postgres"]);
    assert_eq!(
        config.settings.ignore_startup_parameters,
        ["extra_float_digits"]
    );
    Ok(())
}

/// The compose file and the pod manifest parse, mount ./bouncer (which holds both files) at /etc/pgbouncer,
/// start pgwarden on /etc/pgbouncer/pgbouncer.ini, publish the ports the configuration listens on, and
/// probe the paths the listener serves on its port; the Dockerfile builds in stages into a non-root image
/// that exposes those ports and runs that file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_pod_and_dockerfile_agree_with_the_config() -> anyhow::Result<()> {
    let settings = pgwarden::config::load(&ini())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .config
        .settings;
    let (port, metrics) = (settings.listen_port, settings.metrics_listen_port);
    assert_eq!((port, metrics), (6432, 9127));
    let mounted = sidecar().join("bouncer");
    for f in ["pgbouncer.ini", "userlist.txt"] {
        assert!(mounted.join(f).is_file(), "bouncer/{f}");
    }
    let y = yaml(&[
        sidecar().join("docker-compose.yml"),
        sidecar().join("k8s/pod.yaml"),
    ])
    .await?;

    // docker-compose.yml (file 0): runbook 000's services.
    let svc = "0.0.services";
    assert_eq!(at(&y, &format!("{svc}.postgres.image")), "postgres:16");
    let context = sidecar().join(at(&y, &format!("{svc}.pgwarden.build.context")));
    assert!(context.join("Cargo.toml").is_file(), "build context");
    assert!(
        context
            .join(at(&y, &format!("{svc}.pgwarden.build.dockerfile")))
            .is_file()
    );
    assert_eq!(
        list(&y, &format!("{svc}.pgwarden.volumes")),
        ["./bouncer:/etc/pgbouncer:ro"]
    );
    assert_eq!(
        list(&y, &format!("{svc}.pgwarden.ports")),
        [format!("{port}:{port}"), format!("{metrics}:{metrics}")]
    );
    assert_eq!(
        at(&y, &format!("{svc}.pgwarden.depends_on.postgres.condition")),
        "service_healthy"
    );

    // k8s/pod.yaml (file 1): pgwarden a native sidecar of the app.
    let spec = "1.0.spec";
    assert_eq!(at(&y, "1.0.kind"), "Pod");
    let grace: u32 = at(&y, &format!("{spec}.terminationGracePeriodSeconds")).parse()?;
    assert!(grace >= 30, "terminationGracePeriodSeconds {grace}");
    let pw = format!("{spec}.initContainers[0]");
    assert_eq!(at(&y, &format!("{pw}.name")), "pgwarden");
    assert_eq!(at(&y, &format!("{pw}.restartPolicy")), "Always");
    assert_eq!(
        list(&y, &format!("{pw}.args")),
        ["/etc/pgbouncer/pgbouncer.ini"]
    );
    assert_eq!(
        at(&y, &format!("{pw}.volumeMounts[0].mountPath")),
        "/etc/pgbouncer"
    );
    let mut ports = BTreeMap::new();
    for i in 0..2 {
        ports.insert(
            at(&y, &format!("{pw}.ports[{i}].name")).to_owned(),
            at(&y, &format!("{pw}.ports[{i}].containerPort")).parse::<u16>()?,
        );
    }
    assert_eq!(ports["postgres"], port);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(at(&y, &format!("{pw}.{probe}.httpGet.path")), path);
        let named = at(&y, &format!("{pw}.{probe}.httpGet.port"));
        assert_eq!(ports.get(named), Some(&metrics), "{probe} port {named}");
    }
    let volume = format!("{spec}.volumes[0]");
    assert_eq!(
        at(&y, &format!("{volume}.name")),
        at(&y, &format!("{pw}.volumeMounts[0].name"))
    );
    for (i, file) in ["pgbouncer.ini", "userlist.txt"].iter().enumerate() {
        let source = if i == 0 { "configMap" } else { "secret" };
        let item = format!("{volume}.projected.sources[{i}].{source}.items[0]");
        assert_eq!(at(&y, &format!("{item}.key")), *file);
        assert_eq!(at(&y, &format!("{item}.path")), *file);
    }
    assert!(
        at(&y, &format!("{spec}.containers[0].env[0].value"))
            .contains(&format!("@127.0.0.1:{port}/db")),
        "the app connects through the sidecar"
    );

    // The Dockerfile.
    let dockerfile = std::fs::read_to_string(sidecar().join("Dockerfile"))?;
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && !l.trim().is_empty())
        .collect();
    let of = |word: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter_map(|l| l.strip_prefix(word))
            .map(str::trim)
            .collect()
    };
    assert!(of("FROM ").len() >= 3, "multi-stage: {:?}", of("FROM "));
    assert_eq!(of("FROM ").last(), Some(&"debian:bookworm-slim"));
    assert_eq!(of("EXPOSE "), [format!("{port} {metrics}")]);
    assert_eq!(of("USER "), ["10001"]);
    assert_eq!(of("ENTRYPOINT "), ["[\"pgwarden\"]"]);
    assert_eq!(of("CMD "), ["[\"/etc/pgbouncer/pgbouncer.ini\"]"]);
    assert_eq!(of("HEALTHCHECK ").len(), 1);
    Ok(())
}

/// The image's HEALTHCHECK command (bash's /dev/tcp, no curl in the image), pointed at a running pooler's
/// metrics port instead of 9127: it succeeds; against a port where nothing listens it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_healthcheck_probes_healthz() -> anyhow::Result<()> {
    let dockerfile = std::fs::read_to_string(sidecar().join("Dockerfile"))?;
    let exec_form = dockerfile
        .split("HEALTHCHECK ")
        .nth(1)
        .and_then(|h| h.split_once("CMD "))
        .and_then(|(_, rest)| rest.lines().next())
        .context("no HEALTHCHECK ... CMD [...] in the Dockerfile")?;
    // The exec form is a JSON array, which YAML reads.
    let dir = fresh_dir("sidecar-healthcheck")?;
    let file = dir.join("cmd.yaml");
    std::fs::write(&file, exec_form)?;
    let argv = list(&yaml(&[file]).await?, "0.0");
    assert_eq!(argv[..2], ["bash", "-c"]);
    let script = &argv[2];
    assert!(script.contains("/dev/tcp/127.0.0.1/9127"), "{script}");

    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "sidecar_hc", PasswordEncryption::Md5)?;
    let metrics = free_port()?;
    let _pooler = Pooler::start(
        &format!(
            "{} = host=127.0.0.1 port={} dbname={}",
            db.name,
            pg.port(),
            db.name
        ),
        &format!("metrics_listen_addr = 127.0.0.1\nmetrics_listen_port = {metrics}"),
        &db.userlist_line(),
    )
    .await?;
    wait_status(metrics, "/healthz", 200).await?;
    let run = |port: u16| {
        Command::new("bash")
            .arg("-c")
            .arg(script.replace("/9127", &format!("/{port}")))
            .output()
    };
    let ok = run(metrics)?;
    assert!(ok.status.success(), "{ok:?}");
    let nothing = free_port()?;
    assert!(!run(nothing)?.status.success(), "a dead port passed");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
