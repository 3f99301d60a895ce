//! The `pgwarden` binary: command line → config → logging → bind → run. All logic is in the library.

use std::process::ExitCode;

use clap::Parser;
use pgwarden::cli::{self, Cli};
use pgwarden::process::{self, Pidfile};
use pgwarden::{Listeners, State, config, logging};

#[allow(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "the binary's own output"
)]
fn main() -> ExitCode {
    process::one_malloc_arena();
    let cli = Cli::parse();
    if cli.reboot {
        eprintln!(
            "pgwarden: online restart (-R) is not supported; run a second pgwarden and drain the first with SIGTERM"
        );
        return ExitCode::FAILURE;
    }
    let loaded = match config::load(&cli.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        // The plugins are compiled and initialised as a start would, so a broken one fails the check.
        let state = match State::new(loaded.config.clone()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        print!("{}", cli::describe(&loaded, &state.runtime().plugins));
        return ExitCode::SUCCESS;
    }
    match start(&cli, loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgwarden: {e}");
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn start(cli: &Cli, loaded: config::Loaded) -> Result<(), Box<dyn std::error::Error>> {
    let settings = &loaded.config.settings;
    if cli.daemon {
        if settings.pidfile.is_none() {
            return Err(process::ProcessError::DaemonNeedsPidfile.into());
        }
        if settings.logfile.is_none() {
            return Err(process::ProcessError::DaemonNeedsLogfile.into());
        }
        process::daemonize()?;
    }
    let sink = logging::LogSink::new(!cli.quiet && !cli.daemon, settings.logfile.as_deref())?;
    let logs = logging::init(sink, cli.verbose, settings);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let env_set = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = process::worker_threads(settings.worker_threads, env_set, cpus) {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        // Signals first: a SIGTERM that arrives while binding must still mean a clean shutdown
        // (pidfile and socket removed), not the default action.
        let state = State::new(loaded.config)?;
        let _ = state.logs.set(logs);
        process::spawn_signal_handlers(&state)?;
        let settings = &state.runtime().config.settings;
        let listeners = Listeners::bind(settings)?;
        let _pidfile = match &settings.pidfile {
            Some(p) => Some(Pidfile::create(p)?),
            None => None,
        };
        if let Some(user) = cli.user.as_deref().or(settings.user.as_deref()) {
            process::switch_user(user)?;
        }
        for addr in listeners.local_addrs() {
            tracing::info!("listening on {addr}");
        }
        for addr in listeners.metrics_addrs() {
            tracing::info!("metrics and health checks on http://{addr}/");
        }
        if let Some((_, file)) = &listeners.unix {
            tracing::info!("listening on unix:{}", file.path.display());
        }
        tracing::info!(
            "process up: pgwarden {}, pid {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
        pgwarden::run(listeners, state).await;
        tracing::info!("shutdown complete");
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
