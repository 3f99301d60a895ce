//! End-to-end SCRAM tests: published vectors, our client against our server, an independent client
//! implementation (postgres-protocol) and verifiers produced by a real PostgreSQL 15.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;
use crate::auth::md5::verify_plain;
use crate::auth::secret::{ScramKeys, ScramVerifier, Secret};

/// Produced by PostgreSQL 15.x: a throwaway cluster (initdb as the `postgres` OS user, listening only
/// on a Unix socket), then `SET password_encryption='scram-sha-256'; CREATE ROLE u LOGIN PASSWORD
/// 'secret'; SELECT rolpassword FROM pg_authid WHERE rolname='u'`.
const PG_VERIFIER_SECRET: &str = "SCRAM-SHA-256$4096:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=";
/// Same cluster, role `w`, password 'pässwörd' sent as UTF-8.
const PG_VERIFIER_UMLAUTS: &str = "SCRAM-SHA-256$4096:P4561k4OZlyY8CD8jzO+/A==$6xTIDzyN4JitO+s1TkNHeiJr0W9j52uF+7bz06mNPwo=:poIHtxlgcwmZfvgjmJySzPQWhdmZYjbV2//lBYwkjgs=";
/// Same cluster, `password_encryption='md5'`, role `m`, password 'secret'.
const PG_MD5_SECRET: &str = "md5b52328d7451bfeace80c4b8c338106f9";

// RFC 7677 section 3.
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn ok<T>(result: Result<T, ScramError>) -> T {
    result.unwrap_or_else(|e| panic!("unexpected SCRAM error: {e}"))
}

fn rfc_secret() -> Secret {
    let salt = common::b64_decode(RFC_SALT).unwrap_or_default();
    Secret::Scram(ScramVerifier::from_password("pencil", &salt, 4096))
}

/// Runs a whole exchange between our client and our server; returns the server's keys.
fn exchange(client: &mut ScramClient, server: &mut ScramServer) -> Result<ScramKeys, ScramError> {
    let first = client.client_first();
    let server_first = server.client_first("SCRAM-SHA-256", &first)?;
    let client_final = client.server_first(&server_first)?;
    let (server_final, keys) = server.client_final(&client_final)?;
    client.server_final(&server_final)?;
    Ok(keys)
}

fn password_client(password: &str) -> ScramClient {
    ScramClient::new(ScramCredential::Password(password.to_owned()))
}

#[test]
fn rfc7677_client() {
    let credential = ScramCredential::Password("pencil".into());
    let mut client = ScramClient::with_user_and_nonce(credential, "user", RFC_CLIENT_NONCE);
    assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
    let client_final = ok(client.server_first(RFC_SERVER_FIRST.as_bytes()));
    assert_eq!(String::from_utf8_lossy(&client_final), RFC_CLIENT_FINAL);
    ok(client.server_final(RFC_SERVER_FINAL.as_bytes()));
}

#[test]
fn rfc7677_client_rejects_forged_server_final() {
    let credential = ScramCredential::Password("pencil".into());
    let mut client = ScramClient::with_user_and_nonce(credential, "user", RFC_CLIENT_NONCE);
    client.client_first();
    ok(client.server_first(RFC_SERVER_FIRST.as_bytes()));
    let forged = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(
        client.server_final(forged.as_bytes()).err(),
        Some(ScramError::ServerSignatureMismatch)
    );
}

#[test]
fn rfc7677_server() {
    let mut server = ok(ScramServer::with_nonce(
        &rfc_secret(),
        4096,
        RFC_SERVER_NONCE,
    ));
    let server_first = ok(server.client_first("SCRAM-SHA-256", RFC_CLIENT_FIRST.as_bytes()));
    assert_eq!(String::from_utf8_lossy(&server_first), RFC_SERVER_FIRST);
    let (server_final, keys) = ok(server.client_final(RFC_CLIENT_FINAL.as_bytes()));
    assert_eq!(String::from_utf8_lossy(&server_final), RFC_SERVER_FINAL);
    let salt = common::b64_decode(RFC_SALT).unwrap_or_default();
    assert_eq!(keys.salt, salt);
    assert_eq!(keys.iterations, 4096);
    // The recovered ClientKey is the one the password derives.
    let derived = common::derive_keys(b"pencil", &salt, 4096);
    assert_eq!(keys.client_key, derived.client_key);
    assert_eq!(keys.server_key, derived.server_key);
}

#[test]
fn rfc7677_server_rejects_tampered_proof() {
    let mut server = ok(ScramServer::with_nonce(
        &rfc_secret(),
        4096,
        RFC_SERVER_NONCE,
    ));
    ok(server.client_first("SCRAM-SHA-256", RFC_CLIENT_FIRST.as_bytes()));
    let tampered = RFC_CLIENT_FINAL.replace("p=dHzb", "p=eHzb");
    assert_eq!(
        server.client_final(tampered.as_bytes()).err(),
        Some(ScramError::AuthenticationFailed)
    );
}

#[test]
fn our_client_and_server_with_password() {
    for secret in [
        Secret::parse("correct horse"),
        Secret::Scram(ScramVerifier::from_password(
            "correct horse",
            b"0123456789abcdef",
            64,
        )),
    ] {
        let mut server = ok(ScramServer::new(&secret, 64));
        let keys = ok(exchange(&mut password_client("correct horse"), &mut server));
        assert_eq!(keys.iterations, 64);
    }
}

#[test]
fn non_ascii_password_goes_through_saslprep_on_both_sides() {
    // Soft hyphen is mapped to nothing, so the client's spelling does not matter.
    let secret = Secret::parse("pa\u{AD}ss");
    let mut server = ok(ScramServer::new(&secret, 16));
    ok(exchange(&mut password_client("pass"), &mut server));
}

#[test]
fn wrong_password_fails() {
    let secret = Secret::Scram(ScramVerifier::from_password("right", b"salt", 16));
    let mut server = ok(ScramServer::new(&secret, 16));
    let err = exchange(&mut password_client("wrong"), &mut server).err();
    assert_eq!(err, Some(ScramError::AuthenticationFailed));
}

#[test]
fn pass_through_with_recovered_keys() {
    // pgwarden and PostgreSQL hold the same verifier.
    let verifier = Secret::Scram(ScramVerifier::from_password("s3cret", b"shared salt", 32));
    let mut pooler = ok(ScramServer::new(&verifier, 4096));
    let keys = ok(exchange(&mut password_client("s3cret"), &mut pooler));

    let mut postgres = ok(ScramServer::new(&verifier, 4096));
    let mut login = ScramClient::new(ScramCredential::Keys(keys.clone()));
    let backend_keys = ok(exchange(&mut login, &mut postgres));
    assert_eq!(backend_keys, keys);
}

#[test]
fn pass_through_with_mismatched_verifier() {
    let ours = Secret::Scram(ScramVerifier::from_password("s3cret", b"salt one", 32));
    let mut pooler = ok(ScramServer::new(&ours, 4096));
    let keys = ok(exchange(&mut password_client("s3cret"), &mut pooler));

    // Same password, but PostgreSQL's verifier has another salt or iteration count.
    for theirs in [
        ScramVerifier::from_password("s3cret", b"salt two", 32),
        ScramVerifier::from_password("s3cret", b"salt one", 33),
    ] {
        let mut postgres = ok(ScramServer::new(&Secret::Scram(theirs), 4096));
        let mut login = ScramClient::new(ScramCredential::Keys(keys.clone()));
        let err = exchange(&mut login, &mut postgres).err();
        assert_eq!(err, Some(ScramError::VerifierMismatch));
        let text = ScramError::VerifierMismatch.to_string();
        assert!(
            text.contains("identical") && text.contains("salt"),
            "{text}"
        );
    }
}

#[test]
fn pass_through_keys_with_wrong_client_key_fail() {
    let verifier = Secret::Scram(ScramVerifier::from_password("s3cret", b"salt", 32));
    let mut pooler = ok(ScramServer::new(&verifier, 4096));
    let mut keys = ok(exchange(&mut password_client("s3cret"), &mut pooler));
    keys.client_key[0] ^= 0x80;
    let mut postgres = ok(ScramServer::new(&verifier, 4096));
    let err = exchange(
        &mut ScramClient::new(ScramCredential::Keys(keys)),
        &mut postgres,
    )
    .err();
    assert_eq!(err, Some(ScramError::AuthenticationFailed));
}

#[test]
fn mock_user_fails_like_a_wrong_password() {
    let mut real = ok(ScramServer::new(&Secret::parse("pw"), 4096));
    let mut mock = ScramServer::mock("ghost", 4096);

    let mut client_real = password_client("guess");
    let mut client_mock = password_client("guess");
    let first_real = ok(real.client_first("SCRAM-SHA-256", &client_real.client_first()));
    let first_mock = ok(mock.client_first("SCRAM-SHA-256", &client_mock.client_first()));
    // Same shape: nonce of the same length, 16-byte salt, same iteration count.
    let shape = |m: &[u8]| {
        let text = String::from_utf8_lossy(m).into_owned();
        text.split(',')
            .map(|item| (item[..2].to_owned(), item.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&first_real), shape(&first_mock));
    assert!(String::from_utf8_lossy(&first_mock).ends_with(",i=4096"));

    let final_real = ok(client_real.server_first(&first_real));
    let final_mock = ok(client_mock.server_first(&first_mock));
    let err_real = real.client_final(&final_real).err();
    let err_mock = mock.client_final(&final_mock).err();
    assert_eq!(err_real, Some(ScramError::AuthenticationFailed));
    assert_eq!(err_real, err_mock);
}

/// Drives postgres-protocol's client against our server.
fn postgres_protocol_exchange(
    secret: &Secret,
    password: &str,
    binding: ChannelBinding,
) -> Result<(), String> {
    let mut server = ScramServer::new(secret, 4096).map_err(|e| e.to_string())?;
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let server_first = server
        .client_first("SCRAM-SHA-256", client.message())
        .map_err(|e| e.to_string())?;
    client.update(&server_first).map_err(|e| e.to_string())?;
    let (server_final, _) = server
        .client_final(client.message())
        .map_err(|e| e.to_string())?;
    client.finish(&server_final).map_err(|e| e.to_string())
}

#[test]
fn postgres_protocol_client_against_our_server() {
    let secrets = [
        Secret::parse("tokio pw"),
        Secret::Scram(ScramVerifier::from_password("tokio pw", b"some salt", 128)),
    ];
    for secret in &secrets {
        // `unsupported` sends "n,,", `unrequested` sends "y,,": both must work without TLS.
        for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
            assert_eq!(
                postgres_protocol_exchange(secret, "tokio pw", binding),
                Ok(())
            );
        }
        let wrong = postgres_protocol_exchange(secret, "nope", ChannelBinding::unsupported());
        assert_eq!(wrong, Err(ScramError::AuthenticationFailed.to_string()));
    }
}

#[test]
fn postgres_15_verifier_is_classified_and_checked() {
    let secret = Secret::parse(PG_VERIFIER_SECRET);
    assert_eq!(secret.kind(), "scram-sha-256");
    assert!(verify_plain(&secret, "u", b"secret"));
    assert!(!verify_plain(&secret, "u", b"Secret"));
    assert!(!verify_plain(&secret, "u", b""));

    let umlauts = Secret::parse(PG_VERIFIER_UMLAUTS);
    assert!(verify_plain(&umlauts, "w", "pässwörd".as_bytes()));
    assert!(!verify_plain(&umlauts, "w", b"passwoerd"));

    let md5 = Secret::parse(PG_MD5_SECRET);
    assert_eq!(md5.kind(), "md5");
    assert!(verify_plain(&md5, "m", b"secret"));
    assert!(!verify_plain(&md5, "u", b"secret"));
}

#[test]
fn postgres_15_verifier_drives_our_server() {
    let secret = Secret::parse(PG_VERIFIER_SECRET);
    let mut server = ok(ScramServer::new(&secret, 1));
    let keys = ok(exchange(&mut password_client("secret"), &mut server));
    assert_eq!(keys.iterations, 4096);

    let mut server = ok(ScramServer::new(&secret, 1));
    let err = exchange(&mut password_client("secreT"), &mut server).err();
    assert_eq!(err, Some(ScramError::AuthenticationFailed));

    assert_eq!(
        postgres_protocol_exchange(&secret, "secret", ChannelBinding::unsupported()),
        Ok(())
    );

    // Pass-through to a server holding the same PostgreSQL verifier.
    let mut backend = ok(ScramServer::new(&secret, 1));
    ok(exchange(
        &mut ScramClient::new(ScramCredential::Keys(keys)),
        &mut backend,
    ));
}

#[test]
fn every_truncation_of_a_valid_exchange_is_rejected_without_panic() {
    let secret = rfc_secret();
    for cut in 0..RFC_CLIENT_FINAL.len() {
        let mut server = ok(ScramServer::with_nonce(&secret, 4096, RFC_SERVER_NONCE));
        ok(server.client_first("SCRAM-SHA-256", RFC_CLIENT_FIRST.as_bytes()));
        assert!(
            server
                .client_final(&RFC_CLIENT_FINAL.as_bytes()[..cut])
                .is_err(),
            "cut {cut}"
        );
    }
    for cut in 0..RFC_CLIENT_FIRST.len() {
        let mut server = ScramServer::mock("x", 1);
        // Some prefixes are themselves valid (a shorter nonce); none may panic.
        let _ = server.client_first("SCRAM-SHA-256", &RFC_CLIENT_FIRST.as_bytes()[..cut]);
    }
    for cut in 0..RFC_SERVER_FIRST.len() {
        let credential = ScramCredential::Password("pencil".into());
        let mut client = ScramClient::with_user_and_nonce(credential, "user", RFC_CLIENT_NONCE);
        client.client_first();
        let result = client.server_first(&RFC_SERVER_FIRST.as_bytes()[..cut]);
        // Cutting into "i=4096" leaves a smaller, well-formed count; anything shorter is broken.
        if cut <= RFC_SERVER_FIRST.len() - "4096".len() {
            assert!(result.is_err(), "cut {cut}");
        }
    }
    for cut in 0..RFC_SERVER_FINAL.len() {
        let credential = ScramCredential::Password("pencil".into());
        let mut client = ScramClient::with_user_and_nonce(credential, "user", RFC_CLIENT_NONCE);
        client.client_first();
        ok(client.server_first(RFC_SERVER_FIRST.as_bytes()));
        assert!(
            client
                .server_final(&RFC_SERVER_FINAL.as_bytes()[..cut])
                .is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn byte_mutations_never_panic_and_never_authenticate() {
    let replacements = [0u8, b',', b'=', b'a', 0x7f, 0x80, 0xff];
    let secret = rfc_secret();
    let original = RFC_CLIENT_FINAL.as_bytes();
    for pos in 0..original.len() {
        for &byte in &replacements {
            if original[pos] == byte {
                continue;
            }
            let mut mutated = original.to_vec();
            mutated[pos] = byte;
            let mut server = ok(ScramServer::with_nonce(&secret, 4096, RFC_SERVER_NONCE));
            ok(server.client_first("SCRAM-SHA-256", RFC_CLIENT_FIRST.as_bytes()));
            assert!(
                server.client_final(&mutated).is_err(),
                "pos {pos} byte {byte}"
            );
        }
    }
    let original = RFC_SERVER_FIRST.as_bytes();
    for pos in 0..original.len() {
        for &byte in &replacements {
            let mut mutated = original.to_vec();
            mutated[pos] = byte;
            let credential = ScramCredential::Password("pencil".into());
            let mut client = ScramClient::with_user_and_nonce(credential, "user", RFC_CLIENT_NONCE);
            client.client_first();
            // A mutated salt or iteration count can still be well-formed; it just must not panic
            // (and the later signature check would catch it).
            let _ = client.server_first(&mutated);
        }
    }
}
