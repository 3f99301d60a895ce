//! Opening a server connection: connect, StartupMessage, authentication, the welcome parameters,
//! `connect_query`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::{ServerBody, ServerConn, ServerError, read_frame};
use crate::auth::md5::{md5_salted, md5_secret};
use crate::auth::scram::{ScramClient, ScramCredential};
use crate::auth::secret::{ScramKeys, Secret};
use crate::clock::Coarse;
use crate::net::{Keepalive, Stream};
use crate::params::{ParamValues, Tracked};
use crate::protocol::backend::{self, Authentication, ErrorFields, tag};
use crate::protocol::{frontend, startup};

/// Everything needed to open one server connection for a pool.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    /// Host names, IPs, or socket directories (starting with `/`); one is picked per attempt.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    /// Extra startup parameters from the database entry (client_encoding, datestyle, timezone,
    /// application_name).
    pub startup_params: Vec<(String, String)>,
    /// The secret to answer the server's password request with, if pgwarden has one.
    pub secret: Option<Secret>,
    /// Whether `secret` came from the database entry's `password=` (for messages).
    pub secret_source: &'static str,
    pub connect_timeout: Duration,
    pub connect_query: Option<String>,
    pub keepalive: Keepalive,
    pub max_packet: u32,
}

/// What a successful login learnt, besides the connection itself.
#[derive(Debug, Clone, Default)]
pub struct Welcome {
    /// The tracked parameters among the ParameterStatus messages the server sent at login (the index in
    /// the tracked set, the server's value): a new client starts from these, then its startup packet's.
    pub tracked: Vec<(usize, String)>,
    /// The others, as the ParameterStatus messages every new client of the pool is sent as they are: built
    /// once here, copied whole at each login (message by message, they were ~2,700 instructions a login).
    pub untracked_messages: Bytes,
}

/// Connects and logs in, all within `spec.connect_timeout` (PgBouncer's server_connect_timeout).
pub async fn connect(
    spec: &LoginSpec,
    scram_keys: Option<&ScramKeys>,
    tracked: &Arc<Tracked>,
) -> Result<(ServerConn, Welcome), ServerError> {
    match tokio::time::timeout(
        spec.connect_timeout,
        connect_inner(spec, scram_keys, tracked),
    )
    .await
    {
        Ok(res) => res,
        Err(_) => Err(ServerError::ConnectTimeout),
    }
}

async fn connect_inner(
    spec: &LoginSpec,
    scram_keys: Option<&ScramKeys>,
    tracked: &Arc<Tracked>,
) -> Result<(ServerConn, Welcome), ServerError> {
    let addr = if spec.host.starts_with('/') {
        crate::net::socket_path(spec.host.as_ref(), spec.port)
            .display()
            .to_string()
    } else {
        format!("{}:{}", spec.host, spec.port)
    };
    let stream = Stream::connect(&spec.host, spec.port)
        .await
        .map_err(|source| ServerError::Connect {
            addr: addr.clone(),
            source,
        })?;
    stream.set_keepalive(&spec.keepalive)?;
    let mut conn = ServerConn::new(stream, Arc::from(&*spec.host), spec.port, tracked);

    let mut out = BytesMut::with_capacity(256);
    let mut params: Vec<(&str, &str)> = vec![("user", &spec.user), ("database", &spec.database)];
    params.extend(
        spec.startup_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    startup::write_startup(&mut out, params);
    conn.stream.write_all(&out).await?;

    authenticate(&mut conn, spec, scram_keys).await?;
    let welcome = read_welcome(&mut conn, spec, tracked).await?;
    if let Some(sql) = &spec.connect_query {
        // PgBouncer logs connect_query errors and carries on; so do we.
        if let Err(e) = conn.simple_query(sql, spec.max_packet).await {
            match e {
                ServerError::Query(fields) => {
                    tracing::warn!(server = conn.id, "connect_query failed: {fields}")
                }
                other => return Err(other),
            }
        }
    }
    conn.last_used = Coarse::now();
    Ok((conn, welcome))
}

async fn authenticate(
    conn: &mut ServerBody,
    spec: &LoginSpec,
    keys: Option<&ScramKeys>,
) -> Result<(), ServerError> {
    let mut scram: Option<ScramClient> = None;
    let mut out = BytesMut::new();
    loop {
        let frame = read_frame(&mut conn.stream, &mut conn.rbuf, spec.max_packet).await?;
        match frame.tag {
            tag::AUTHENTICATION => {}
            tag::ERROR_RESPONSE => {
                return Err(ServerError::Login(Box::new(ErrorFields::parse(
                    &frame.body,
                )?)));
            }
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => continue,
            other => {
                return Err(ServerError::Unexpected {
                    tag: other,
                    phase: "authentication",
                });
            }
        }
        out.clear();
        match Authentication::parse(&frame.body)? {
            Authentication::Ok => return Ok(()),
            Authentication::CleartextPassword => {
                let Some(Secret::Plain(pw)) = &spec.secret else {
                    return Err(cannot(
                        spec,
                        "a cleartext password",
                        "the plain-text password",
                    ));
                };
                frontend::write_password(&mut out, pw.as_bytes());
            }
            Authentication::Md5Password { salt } => {
                let hashed = match &spec.secret {
                    Some(Secret::Plain(pw)) => md5_secret(pw, &spec.user),
                    Some(Secret::Md5(h)) => h.clone(),
                    _ => return Err(cannot(spec, "MD5", "a plain-text password or an md5 hash")),
                };
                frontend::write_password(&mut out, md5_salted(&hashed, salt).as_bytes());
            }
            Authentication::Sasl { mechanisms } => {
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    let offered = mechanisms.join(", ");
                    return Err(ServerError::CannotAuthenticate(format!(
                        "server offers SASL mechanisms pgwarden does not support: {offered}"
                    )));
                }
                let credential = match (&spec.secret, keys) {
                    (Some(Secret::Plain(pw)), _) => ScramCredential::Password(pw.clone()),
                    (Some(Secret::Scram(_)), Some(k)) => ScramCredential::Keys(k.clone()),
                    (Some(Secret::Scram(_)), None) => return Err(scram_keys_missing(spec)),
                    _ => {
                        return Err(cannot(
                            spec,
                            "SCRAM-SHA-256",
                            "a plain-text password or a SCRAM secret",
                        ));
                    }
                };
                let mut client = ScramClient::new(credential);
                let first = client.client_first();
                frontend::write_sasl_initial(&mut out, "SCRAM-SHA-256", &first);
                scram = Some(client);
            }
            Authentication::SaslContinue(data) => {
                let client = scram.as_mut().ok_or(ServerError::Unexpected {
                    tag: b'R',
                    phase: "SASL",
                })?;
                let reply = client
                    .server_first(data)
                    .map_err(|e| ServerError::CannotAuthenticate(e.to_string()))?;
                frontend::write_sasl_response(&mut out, &reply);
            }
            Authentication::SaslFinal(data) => {
                let client = scram.as_mut().ok_or(ServerError::Unexpected {
                    tag: b'R',
                    phase: "SASL",
                })?;
                client
                    .server_final(data)
                    .map_err(|e| ServerError::CannotAuthenticate(e.to_string()))?;
                continue;
            }
            Authentication::Unsupported(code) => {
                return Err(ServerError::CannotAuthenticate(format!(
                    "server requested an authentication method pgwarden does not support (code {code})"
                )));
            }
        }
        conn.stream.write_all(&out).await?;
    }
}

fn cannot(spec: &LoginSpec, method: &str, needs: &str) -> ServerError {
    let have = match &spec.secret {
        None => "no password for this user".to_owned(),
        Some(s) => format!("only a {} secret ({})", s.kind(), spec.secret_source),
    };
    ServerError::CannotAuthenticate(format!(
        "cannot log in to the server as \"{}\": it asks for {method} authentication, which needs {needs}, but pgwarden has {have}",
        spec.user
    ))
}

fn scram_keys_missing(spec: &LoginSpec) -> ServerError {
    ServerError::CannotAuthenticate(format!(
        "cannot log in to the server as \"{}\": the only secret pgwarden has is a SCRAM verifier ({}), and a \
         verifier alone cannot answer SCRAM; it works only when the client itself logged in with SCRAM and the \
         pool's user is the client's own user (no forced user=), or give pgwarden the plain-text password",
        spec.user, spec.secret_source
    ))
}

async fn read_welcome(
    conn: &mut ServerBody,
    spec: &LoginSpec,
    tracked: &Tracked,
) -> Result<Welcome, ServerError> {
    let mut welcome = Welcome::default();
    let mut params = ParamValues::new(tracked);
    let mut untracked = BytesMut::new();
    loop {
        let frame = read_frame(&mut conn.stream, &mut conn.rbuf, spec.max_packet).await?;
        match frame.tag {
            tag::PARAMETER_STATUS => {
                let (name, value) = backend::parse_parameter_status(&frame.body)?;
                if let Some(i) = tracked.index(name) {
                    params.set(i, value);
                    welcome.tracked.push((i, value.to_owned()));
                } else {
                    backend::write_parameter_status(&mut untracked, name, value);
                }
            }
            tag::BACKEND_KEY_DATA => {
                conn.backend_key = Some(backend::parse_backend_key_data(&frame.body)?)
            }
            tag::READY_FOR_QUERY => break,
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            tag::ERROR_RESPONSE => {
                return Err(ServerError::Login(Box::new(ErrorFields::parse(
                    &frame.body,
                )?)));
            }
            other => {
                return Err(ServerError::Unexpected {
                    tag: other,
                    phase: "login",
                });
            }
        }
    }
    conn.params = params;
    welcome.untracked_messages = untracked.freeze();
    Ok(welcome)
}
