//! Logging: `tracing` to stderr (unless `-q`) and/or `logfile`, as text or JSON (`log_format`), verbosity
//! from `-v`/`verbose` (`RUST_LOG` for finer control), all but `-v` and `-q` changed by a reload.
//!
//! Lines about one connection go through [`conn_log!`]: in text they read as PgBouncer's do
//! (`C-0x1f: db/user@127.0.0.1:50432 login attempt: ...`, `S-0x3: db/user@127.0.0.1:5432 new connection
//! to server (from 127.0.0.1:40100)`), so grep-based runbooks keep working; in JSON the connection is the
//! keys `conn`, `db`, `user` and `addr` beside `timestamp`, `level` and `message`. Nothing about the
//! connection is formatted unless the line is emitted.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, Settings};
use crate::net::Peer;

/// Logs one line about a connection, PgBouncer's way. `$label` is a [`ConnLabel`]; the rest is what
/// `tracing::info!` and friends take after their fields.
macro_rules! conn_log {
    ($level:ident, $label:expr, $($arg:tt)+) => {{
        let label: &$crate::logging::ConnLabel<'_> = &$label;
        ::tracing::$level!(
            conn = %label.tag(),
            db = %label.db,
            user = %label.user,
            addr = %label.addr,
            $($arg)+
        )
    }};
}
pub(crate) use conn_log;

/// Who a connection line is about: PgBouncer's `C-0x…: db/user@host:port` prefix, from borrowed parts
/// (building one formats nothing).
#[derive(Debug, Clone, Copy)]
pub struct ConnLabel<'a> {
    /// `C` for a client, `S` for a server.
    pub kind: char,
    /// pgwarden's process-unique id of the connection (PgBouncer prints a pointer there).
    pub id: u64,
    /// The database (alias) and user; PgBouncer's `(nodb)`/`(nouser)` until known.
    pub db: &'a str,
    pub user: &'a str,
    pub addr: ConnAddr<'a>,
}

impl ConnLabel<'_> {
    /// `C-0x1f`.
    pub fn tag(&self) -> impl fmt::Display + '_ {
        Tag(self.kind, self.id)
    }
}

impl fmt::Display for ConnLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}/{}@{}", self.tag(), self.db, self.user, self.addr)
    }
}

struct Tag(char, u64);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:#x}", self.0, self.1)
    }
}

/// The other end of a connection: a client's address, or the server's host (`unix` for a socket
/// directory, as PgBouncer writes it) and port.
#[derive(Debug, Clone, Copy)]
pub enum ConnAddr<'a> {
    Peer(Peer),
    Server { host: &'a str, port: u16 },
}

impl fmt::Display for ConnAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(p) => write!(f, "{p}"),
            Self::Server { host, port } if host.starts_with('/') => write!(f, "unix:{port}"),
            Self::Server { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Server { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Where log lines go: stderr and/or the logfile, which can be reopened (log rotation) or changed.
#[derive(Clone)]
pub struct LogSink {
    stderr: bool,
    file: Arc<Mutex<Option<File>>>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogSink {
    pub fn new(stderr: bool, logfile: Option<&Path>) -> io::Result<Self> {
        let file = logfile.map(open_append).transpose()?;
        Ok(Self {
            stderr,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Switches to `logfile` (opened anew, so a renamed file stops growing); on error the current file
    /// stays.
    pub fn reopen(&self, logfile: Option<&Path>) -> io::Result<()> {
        let file = logfile.map(open_append).transpose()?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.stderr {
            let _ = io::stderr().write_all(buf);
        }
        if let Some(f) = &mut *self.file.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Text fields: a connection line starts with PgBouncer's prefix built from the `conn`, `db`, `user`
/// and `addr` fields, then the message, then any other fields as `name=value`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

#[derive(Default)]
struct TextVisitor {
    conn: Option<String>,
    db: String,
    user: String,
    addr: String,
    message: String,
    rest: String,
}

impl Visit for TextVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = match field.name() {
            "message" => write!(self.message, "{value:?}"),
            "conn" => write!(self.conn.get_or_insert_with(String::new), "{value:?}"),
            "db" => write!(self.db, "{value:?}"),
            "user" => write!(self.user, "{value:?}"),
            "addr" => write!(self.addr, "{value:?}"),
            name if name.starts_with("log.") => Ok(()),
            name => write!(self.rest, " {name}={value:?}"),
        };
    }
}

impl TextVisitor {
    fn write(&self, w: &mut Writer<'_>) -> fmt::Result {
        if let Some(conn) = &self.conn {
            write!(w, "{conn}: {}/{}@{} ", self.db, self.user, self.addr)?;
        }
        w.write_str(&self.message)?;
        let rest = if self.message.is_empty() {
            self.rest.trim_start()
        } else {
            &self.rest
        };
        w.write_str(rest)
    }
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = TextVisitor::default();
        fields.record(&mut v);
        v.write(&mut writer)
    }
}

/// Text or JSON lines, switched by a reload (`log_format`).
struct LineFormat {
    json: Arc<AtomicBool>,
    text: Format<Full, SystemTime>,
    as_json: Format<Json, SystemTime>,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.json.load(Ordering::Relaxed) {
            self.as_json.format_event(ctx, writer, event)
        } else {
            self.text.format_event(ctx, writer, event)
        }
    }
}

/// The `EnvFilter` directive for a verbosity: 0 info, 1 debug, 2+ trace (for pgwarden; others warn).
fn directive(verbose: u8) -> String {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    format!("pgwarden={level},warn")
}

/// What a reload may change in the running logger: the format, the verbosity, the logfile.
pub struct LogControl {
    sink: LogSink,
    json: Arc<AtomicBool>,
    /// Replaces the filter; `None` when `RUST_LOG` decides (a reload leaves it alone).
    set_filter: Option<Box<dyn Fn(EnvFilter) + Send + Sync>>,
    /// `-v` on the command line: the verbosity never drops below it.
    cli_verbose: u8,
    applied: Mutex<Applied>,
}

#[derive(Debug, Clone, PartialEq)]
struct Applied {
    verbose: u8,
    logfile: Option<PathBuf>,
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogControl")
            .field("json", &self.json)
            .field("cli_verbose", &self.cli_verbose)
            .finish_non_exhaustive()
    }
}

/// Installs the global subscriber writing to `sink`, as `settings` say (`log_format`, `verbose` raised
/// to `cli_verbose`), and returns what a reload uses to change it.
pub fn init(sink: LogSink, cli_verbose: u8, settings: &Settings) -> LogControl {
    let verbose = cli_verbose.max(settings.verbose);
    let json = Arc::new(AtomicBool::new(settings.log_format == LogFormat::Json));
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (EnvFilter::new(directive(verbose)), false),
    };
    let format = LineFormat {
        json: Arc::clone(&json),
        text: tracing_subscriber::fmt::format()
            .with_ansi(false)
            .with_target(false),
        as_json: tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink.clone())
        .with_ansi(false)
        .fmt_fields(TextFields)
        .event_format(format)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    let _ = builder.try_init();
    let set_filter: Option<Box<dyn Fn(EnvFilter) + Send + Sync>> = if from_env {
        None
    } else {
        Some(Box::new(move |f| {
            let _ = handle.reload(f);
        }))
    };
    LogControl {
        sink,
        json,
        set_filter,
        cli_verbose,
        applied: Mutex::new(Applied {
            verbose,
            logfile: settings.logfile.clone(),
        }),
    }
}

impl LogControl {
    /// Brings the logger in line with reloaded `settings`: format, verbosity, and the logfile when its
    /// path changed.
    pub fn apply(&self, settings: &Settings) {
        self.json
            .store(settings.log_format == LogFormat::Json, Ordering::Relaxed);
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let verbose = self.cli_verbose.max(settings.verbose);
        if verbose != applied.verbose
            && let Some(set) = &self.set_filter
        {
            set(EnvFilter::new(directive(verbose)));
            applied.verbose = verbose;
        }
        if settings.logfile != applied.logfile {
            match self.sink.reopen(settings.logfile.as_deref()) {
                Ok(()) => {
                    applied.logfile.clone_from(&settings.logfile);
                    drop(applied);
                    match &settings.logfile {
                        Some(p) => tracing::info!("logging to {}", p.display()),
                        None => tracing::info!("logfile unset: no longer logging to a file"),
                    }
                }
                Err(e) => {
                    let path = settings.logfile.as_deref().unwrap_or(Path::new(""));
                    drop(applied);
                    tracing::error!("cannot open logfile {}: {e}", path.display());
                }
            }
        }
    }

    /// Reopens the current logfile (after logrotate renamed it: the old file stops growing, a new one
    /// starts). On error the old file stays in use.
    pub fn reopen(&self) {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = applied.logfile.clone() else {
            return;
        };
        drop(applied);
        if let Err(e) = self.sink.reopen(Some(&path)) {
            tracing::error!("cannot reopen logfile {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tracing_subscriber::fmt::MakeWriter;

    /// Collects what a scoped subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    fn capture(json: bool, emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let format = LineFormat {
            json: Arc::new(AtomicBool::new(json)),
            text: tracing_subscriber::fmt::format()
                .with_ansi(false)
                .with_target(false),
            as_json: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .fmt_fields(TextFields)
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    fn client() -> ConnLabel<'static> {
        ConnLabel {
            kind: 'C',
            id: 0x1f,
            db: "app",
            user: "alice",
            addr: ConnAddr::Peer(Peer::Tcp("127.0.0.1:50432".parse().unwrap())),
        }
    }

    #[test]
    fn text_connection_lines_have_pgbouncers_prefix() {
        let out = capture(false, || {
            conn_log!(
                info,
                client(),
                "login attempt: db={} user={} tls=no",
                "app",
                "alice"
            );
            tracing::warn!(server = 7, "plain line");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with(
                " INFO C-0x1f: app/alice@127.0.0.1:50432 login attempt: db=app user=alice tls=no"
            ),
            "{out}"
        );
        assert!(lines[1].ends_with(" WARN plain line server=7"), "{out}");
    }

    #[test]
    fn json_lines_carry_the_connection_as_keys() {
        let out = capture(true, || {
            conn_log!(
                info,
                client(),
                "closing because: {} (age={}s)",
                "client close request",
                3
            );
        });
        let line = out.trim_end();
        assert!(!line.contains('\n'), "one line: {out}");
        for part in [
            r#""level":"INFO""#,
            r#""message":"closing because: client close request (age=3s)""#,
            r#""conn":"C-0x1f""#,
            r#""db":"app""#,
            r#""user":"alice""#,
            r#""addr":"127.0.0.1:50432""#,
            r#""timestamp":""#,
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }

    #[test]
    fn server_addresses_as_pgbouncer_writes_them() {
        let s = |host: &'static str| ConnLabel {
            kind: 'S',
            id: 3,
            db: "app",
            user: "alice",
            addr: ConnAddr::Server { host, port: 5432 },
        };
        assert_eq!(s("db1").to_string(), "S-0x3: app/alice@db1:5432");
        assert_eq!(
            s("/var/run/postgresql").to_string(),
            "S-0x3: app/alice@unix:5432"
        );
        assert_eq!(s("::1").to_string(), "S-0x3: app/alice@[::1]:5432");
    }

    #[test]
    fn reopen_moves_to_a_new_file() {
        let dir = std::env::temp_dir().join(format!("pgwarden-logging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let mut sink = LogSink::new(false, Some(&path)).unwrap();
        sink.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        sink.write_all(b"two\n").unwrap();
        sink.reopen(Some(&path)).unwrap();
        sink.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        assert!(sink.reopen(Some(&dir.join("no/such/dir/x.log"))).is_err());
        sink.write_all(b"four\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\nfour\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
