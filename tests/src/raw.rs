//! A raw protocol client for tests that real drivers cannot express: arbitrary startup parameters,
//! SSLRequest, malformed or oversized frames, hand-built pipelines.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use pgwarden::protocol::backend::{self, Authentication, ErrorFields};
use pgwarden::protocol::{frame, frontend, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn error(&self) -> Option<ErrorFields> {
        (self.tag == b'E')
            .then(|| ErrorFields::parse(&self.body).ok())
            .flatten()
    }
}

pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

const READ_TIMEOUT: Duration = Duration::from_secs(20);

impl RawClient {
    pub async fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    pub async fn send_startup(&mut self, params: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut b = BytesMut::new();
        startup::write_startup(&mut b, params.iter().copied());
        self.send(&b).await
    }

    /// Reads one byte (the answer to SSLRequest/GSSENCRequest).
    pub async fn read_byte(&mut self) -> anyhow::Result<u8> {
        if !self.buf.is_empty() {
            let b = self.buf[0];
            let _ = self.buf.split_to(1);
            return Ok(b);
        }
        let mut one = [0u8; 1];
        tokio::time::timeout(READ_TIMEOUT, self.stream.read_exact(&mut one))
            .await
            .context("timed out")??;
        Ok(one[0])
    }

    /// The next message; `Ok(None)` when the server closed the connection.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Msg>> {
        loop {
            if let Some(f) = frame::split(&mut self.buf, u32::MAX)? {
                return Ok(Some(Msg {
                    tag: f.tag,
                    body: f.body.to_vec(),
                }));
            }
            self.buf.reserve(4096);
            let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .context("timed out")??;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Messages up to and including ReadyForQuery (or the connection closing).
    pub async fn until_ready(&mut self) -> anyhow::Result<Vec<Msg>> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await? {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// Startup + cleartext or md5 password (whatever the pooler asks) up to the first ReadyForQuery.
    pub async fn login(
        &mut self,
        params: &[(&str, &str)],
        password: &str,
    ) -> anyhow::Result<Vec<Msg>> {
        self.send_startup(params).await?;
        let user = params
            .iter()
            .find(|(k, _)| *k == "user")
            .map(|(_, v)| *v)
            .unwrap_or_default();
        self.finish_login(user, password).await
    }

    /// After a StartupMessage (sent any way): answers a cleartext or md5 password request and returns every
    /// message up to ReadyForQuery or an error.
    pub async fn finish_login(&mut self, user: &str, password: &str) -> anyhow::Result<Vec<Msg>> {
        let mut seen = Vec::new();
        loop {
            let Some(m) = self.recv().await? else {
                bail!("closed during login: {seen:?}")
            };
            if m.tag == b'R' {
                let mut out = BytesMut::new();
                match Authentication::parse(&m.body)? {
                    Authentication::Ok => {}
                    Authentication::CleartextPassword => {
                        frontend::write_password(&mut out, password.as_bytes())
                    }
                    Authentication::Md5Password { salt } => {
                        let hashed = pgwarden::auth::md5_secret(password, user);
                        frontend::write_password(
                            &mut out,
                            pgwarden::auth::md5_salted(&hashed, salt).as_bytes(),
                        );
                    }
                    other => bail!("raw client cannot answer {other:?}"),
                }
                if !out.is_empty() {
                    self.send(&out).await?;
                }
            }
            let done = m.tag == b'Z' || m.tag == b'E';
            seen.push(m);
            if done {
                return Ok(seen);
            }
        }
    }

    pub async fn query(&mut self, sql: &str) -> anyhow::Result<Vec<Msg>> {
        let mut b = BytesMut::new();
        frontend::write_query(&mut b, sql);
        self.send(&b).await?;
        self.until_ready().await
    }
}

/// A message frame with an arbitrary tag and body.
pub fn frame_bytes(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_u32(body.len() as u32 + 4);
    b.put_slice(body);
    b.to_vec()
}

/// The first ErrorResponse among `msgs`.
pub fn first_error(msgs: &[Msg]) -> Option<ErrorFields> {
    msgs.iter().find_map(Msg::error)
}

/// ParameterStatus values among `msgs`.
pub fn parameter_statuses(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m.tag == b'S')
        .filter_map(|m| {
            backend::parse_parameter_status(&m.body)
                .ok()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}
