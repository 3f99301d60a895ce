//! The HTTP listener for operators (off unless `metrics_listen_addr` is set): `GET /metrics` in Prometheus'
//! text format, `GET /healthz` (200 while the process serves) and `GET /readyz` (200 when it should get
//! clients, else 503 with the reason).
//!
//! The server is a minimal HTTP/1.1 one on tokio rather than a framework: four fixed GET routes need no
//! routing, bodies or keep-alive, and no HTTP crate is otherwise in the build. Each connection gets one
//! request head (at most 8 KiB, within 5 s), one answer, and `Connection: close`; at most 64 connections are
//! served at once, the rest are closed unanswered.
//!
//! Layout: `exposition` (the text format), `histogram` (fixed-bucket durations for the pools' hot path),
//! `errors` (error counters by kind), `render` (what `/metrics` shows), `ready` (what `/readyz` checks),
//! `process` (`process_*` from `/proc`).

mod errors;
mod exposition;
mod histogram;
mod process;
mod ready;
mod render;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub use errors::{ErrorCounts, ErrorKind};
pub use exposition::{CONTENT_TYPE, Exposition, Kind};
pub use histogram::{BOUNDS_US, Histogram};
pub use ready::Readiness;
pub use render::{Clients, render};

use crate::state::State;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a connection gets to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

struct Server {
    state: Arc<State>,
    ready: Readiness,
    slots: Arc<Semaphore>,
}

/// Serves the metrics listeners until the task is aborted ([`crate::run`] does when the pooler stops).
pub async fn serve(listeners: Vec<TcpListener>, state: Arc<State>) {
    let server = Arc::new(Server {
        state,
        ready: Readiness::default(),
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    });
    let mut accepts = tokio::task::JoinSet::new();
    for listener in listeners {
        accepts.spawn(accept(listener, Arc::clone(&server)));
    }
    while accepts.join_next().await.is_some() {}
}

async fn accept(listener: TcpListener, server: Arc<Server>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Over the limit: closed unanswered (a scraper retries at its next interval).
                let Ok(slot) = Arc::clone(&server.slots).try_acquire_owned() else {
                    continue;
                };
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = tokio::time::timeout(IO_TIMEOUT, handle(stream, &server)).await;
                });
            }
            Err(e) => {
                tracing::warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, server: &Server) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        if let Some(end) = head_end(&buf) {
            break &buf[..end];
        }
        if buf.len() >= MAX_HEAD {
            return respond(
                &mut stream,
                &Response::text(431, "request head too large\n"),
                true,
            )
            .await;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (response, head_only) = match Request::parse(head) {
        None => (Response::text(400, "bad request\n"), false),
        Some(req) => (route(server, &req).await, req.method == "HEAD"),
    };
    respond(&mut stream, &response, head_only).await
}

/// Where the head ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// The request line of a request head.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The target without its query string.
    path: &'a str,
}

impl<'a> Request<'a> {
    fn parse(head: &'a [u8]) -> Option<Self> {
        let line = head.split(|&b| b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let mut parts = line.split(' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
            return None;
        }
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        Some(Self { method, path })
    }
}

/// An answer: status, content type, body.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

async fn route(server: &Server, req: &Request<'_>) -> Response {
    if !matches!(req.path, "/metrics" | "/healthz" | "/readyz") {
        return Response::text(404, "not found\n");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "only GET and HEAD\n");
    }
    match req.path {
        "/metrics" => {
            let state = Arc::clone(&server.state);
            // Reads /proc and takes each pool's lock briefly: off the async workers.
            match tokio::task::spawn_blocking(move || render(&state)).await {
                Ok(body) => Response {
                    status: 200,
                    content_type: CONTENT_TYPE,
                    body,
                },
                Err(e) => Response::text(500, format!("{e}\n")),
            }
        }
        "/healthz" => Response::text(200, "ok\n"),
        _ => match server.ready.check(&server.state).await {
            Ok(()) => Response::text(200, "ready\n"),
            Err(reason) => Response::text(503, format!("not ready: {reason}\n")),
        },
    }
}

async fn respond(stream: &mut TcpStream, r: &Response, head_only: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if r.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    if !head_only {
        out.push_str(&r.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let get = |m, p| Some(Request { method: m, path: p });
        assert_eq!(
            Request::parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            get("GET", "/metrics")
        );
        assert_eq!(
            Request::parse(b"HEAD /readyz?verbose=1 HTTP/1.0\n\n"),
            get("HEAD", "/readyz")
        );
        assert_eq!(Request::parse(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(Request::parse(b"GET /metrics HTTP/2\r\n\r\n"), None);
        assert_eq!(Request::parse(b"GET  /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(Request::parse(b"\xff / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
