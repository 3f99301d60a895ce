//! Authenticating a client against the secret pgwarden holds for it (cleartext, md5, SCRAM-SHA-256).
//!
//! Unknown users go through the same exchange as known ones and fail at the end, so a client cannot learn
//! which user names exist. Failures give PostgreSQL's own message and SQLSTATE 28P01.

use super::{ClientConn, End};
use crate::auth::{ScramKeys, ScramServer, Secret, verify_md5, verify_plain};
use crate::config::AuthType;
use crate::protocol::backend;
use crate::protocol::frontend::{self, tag};

/// Limit for a password or SASL message: PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH (65,535) with room to spare,
/// so that a password longer than the longest a secret can hold (PgBouncer's MAX_PASSWORD, 65,536 with
/// its NUL) is a wrong password, as in PgBouncer, rather than a malformed message.
const MAX_AUTH_MESSAGE: u32 = 128 * 1024;

/// The method used with this client, as PgBouncer picks it: `md5` turns into SCRAM for users whose secret
/// is a SCRAM verifier.
pub fn method(auth_type: AuthType, secret: Option<&Secret>) -> AuthType {
    match (auth_type, secret) {
        (AuthType::Md5, Some(Secret::Scram(_))) => AuthType::ScramSha256,
        (t, _) => t,
    }
}

/// Runs the exchange. `Ok(Some(keys))` after a successful SCRAM login (kept for server logins).
pub async fn authenticate(
    conn: &mut ClientConn,
    method: AuthType,
    user: &str,
    secret: Option<&Secret>,
    scram_iterations: u32,
) -> Result<Option<ScramKeys>, End> {
    let ok = match method {
        AuthType::Any | AuthType::Trust => return Ok(None),
        AuthType::Plain => {
            conn.send(backend::write_auth_cleartext);
            let pw = read_password(conn).await?;
            secret.is_some_and(|s| !pw.is_empty() && verify_plain(s, user, &pw))
        }
        AuthType::Md5 => {
            let salt: [u8; 4] = rand::random();
            conn.send(|b| backend::write_auth_md5(b, salt));
            let response = read_password(conn).await?;
            secret.is_some_and(|s| verify_md5(s, user, salt, &response))
        }
        AuthType::ScramSha256 => return scram(conn, user, secret, scram_iterations).await,
        other => return Err(End::pooler(format!("auth_type {other:?} is not supported"))),
    };
    if ok { Ok(None) } else { Err(failed(user)) }
}

async fn scram(
    conn: &mut ClientConn,
    user: &str,
    secret: Option<&Secret>,
    iterations: u32,
) -> Result<Option<ScramKeys>, End> {
    let mut server = match secret.map(|s| ScramServer::new(s, iterations)) {
        Some(Ok(server)) => server,
        // Unknown user, an md5 secret, or an empty password: the same exchange, bound to fail.
        Some(Err(e)) => {
            tracing::info!("SCRAM authentication for \"{user}\" cannot succeed: {e}");
            ScramServer::mock(user, iterations)
        }
        None => ScramServer::mock(user, iterations),
    };
    conn.send(|b| backend::write_auth_sasl(b, ScramServer::mechanisms()));
    let initial = read_auth_message(conn).await?;
    let (mechanism, data) =
        frontend::parse_sasl_initial(&initial).map_err(|e| End::protocol(&e))?;
    let server_first = server.client_first(mechanism, data).map_err(|e| {
        tracing::info!("SCRAM authentication of \"{user}\" failed: {e}");
        sasl_failed()
    })?;
    conn.send(|b| backend::write_auth_sasl_continue(b, &server_first));
    let response = read_auth_message(conn).await?;
    match server.client_final(&response) {
        Ok((server_final, keys)) => {
            conn.send(|b| backend::write_auth_sasl_final(b, &server_final));
            Ok(Some(keys))
        }
        Err(e) => {
            tracing::info!("SCRAM authentication of \"{user}\" failed: {e}");
            Err(sasl_failed())
        }
    }
}

/// A failed SCRAM exchange (wrong password, unknown user): PgBouncer's words, with the SQLSTATE PostgreSQL
/// gives a failed login (drivers tell authentication failures apart by it).
fn sasl_failed() -> End {
    End::fatal("28P01", "SASL authentication failed")
}

/// PostgreSQL's failure, word for word.
pub fn failed(user: &str) -> End {
    End::fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
}

async fn read_auth_message(conn: &mut ClientConn) -> Result<bytes::Bytes, End> {
    conn.flush().await?;
    match conn.read_frame(MAX_AUTH_MESSAGE).await? {
        Some(f) if f.tag == tag::PASSWORD => Ok(f.body),
        Some(f) => Err(End::pooler(format!(
            "expected a password message, got message type '{}'",
            char::from(f.tag)
        ))),
        None => Err(End::Closed(
            "client closed the connection during authentication".into(),
        )),
    }
}

async fn read_password(conn: &mut ClientConn) -> Result<Vec<u8>, End> {
    let body = read_auth_message(conn).await?;
    let pw = frontend::parse_password(&body).map_err(|e| End::protocol(&e))?;
    Ok(pw.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScramVerifier;

    #[test]
    fn md5_becomes_scram_for_scram_secrets() {
        let v = Secret::Scram(ScramVerifier::from_password("pw", b"saltsalt", 4096));
        assert_eq!(method(AuthType::Md5, Some(&v)), AuthType::ScramSha256);
        assert_eq!(
            method(AuthType::Md5, Some(&Secret::Plain("pw".into()))),
            AuthType::Md5
        );
        assert_eq!(method(AuthType::Md5, None), AuthType::Md5);
        assert_eq!(method(AuthType::Plain, Some(&v)), AuthType::Plain);
    }
}
