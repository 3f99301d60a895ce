//! The untagged packets a client may send first: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.

use bytes::{Buf, BufMut, BytesMut};

use super::ProtocolError;
use super::frame::Reader;

/// Protocol 3.0 as a startup version code.
pub const PROTOCOL_3_0: u32 = 3 << 16;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: u32 = 10_000;

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    Ssl,
    GssEnc,
    Cancel { pid: u32, secret: u32 },
    Startup(StartupMessage),
}

/// A protocol 3.x StartupMessage.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct StartupMessage {
    /// Minor protocol version the client asked for; anything above 0 is answered with
    /// NegotiateProtocolVersion.
    pub minor: u16,
    /// The parameters in the order the client sent them, excluding `_pq_.` protocol options, packed as the
    /// packet lays them out (`name NUL value NUL name NUL value`, without the last NUL): one allocation for
    /// them all. No startup string can hold a NUL.
    params: String,
    /// `_pq_.*` protocol options the client asked for; we support none and say so in
    /// NegotiateProtocolVersion.
    pub protocol_options: Vec<String>,
}

impl StartupMessage {
    /// A message with these parameters (names must not be empty).
    pub fn new<'a>(minor: u16, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut msg = Self {
            minor,
            ..Self::default()
        };
        for (name, value) in params {
            msg.push(name, value);
        }
        msg
    }

    fn push(&mut self, name: &str, value: &str) {
        debug_assert!(!name.is_empty() && !name.contains('\0') && !value.contains('\0'));
        if !self.params.is_empty() {
            self.params.push('\0');
        }
        self.params.push_str(name);
        self.params.push('\0');
        self.params.push_str(value);
    }

    /// The parameters, in the order the client sent them.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        packed_pairs(&self.params)
    }

    /// The parameters as they are packed (see the field): for a record that keeps them in one string.
    pub fn packed_params(&self) -> &str {
        &self.params
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The `(name, value)` pairs of parameters packed as [`StartupMessage::packed_params`] gives them.
pub fn packed_pairs(packed: &str) -> impl Iterator<Item = (&str, &str)> + Clone {
    let mut parts = super::nul_fields(packed);
    std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
}

impl std::fmt::Debug for StartupMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Startup parameters are not secret (passwords never travel here), but keep it compact.
        f.debug_struct("StartupMessage")
            .field("minor", &self.minor)
            .field("params", &self.params().collect::<Vec<_>>())
            .finish()
    }
}

/// Parses the first packet of a connection off `buf`, or `Ok(None)` when it is incomplete.
pub fn parse(buf: &mut BytesMut) -> Result<Option<StartupRequest>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::BadStartupLength(len));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    // Read in place: everything kept is copied out, so splitting the packet off as shared bytes would only
    // cost an allocation.
    let mut r = Reader::new(&buf[4..len as usize]);
    let code = r.u32()?;
    let request = match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            r.expect_end()?;
            if code == SSL_REQUEST_CODE {
                StartupRequest::Ssl
            } else {
                StartupRequest::GssEnc
            }
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.u32()?;
            let secret = r.u32()?;
            r.expect_end()?;
            StartupRequest::Cancel { pid, secret }
        }
        _ if code >> 16 == 3 => StartupRequest::Startup(parse_params(code as u16, &mut r)?),
        _ => {
            return Err(ProtocolError::UnsupportedVersion {
                major: code >> 16,
                minor: code & 0xffff,
            });
        }
    };
    buf.advance(len as usize);
    Ok(Some(request))
}

fn parse_params(minor: u16, r: &mut Reader<'_>) -> Result<StartupMessage, ProtocolError> {
    let mut msg = StartupMessage {
        minor,
        // Room for every string left in the packet: the only allocation.
        params: String::with_capacity(r.remaining()),
        ..StartupMessage::default()
    };
    loop {
        if r.remaining() == 0 {
            // PgBouncer's wording for a packet that lacks the final NUL.
            return Err(ProtocolError::Malformed(
                "invalid startup packet layout: expected terminator as last byte",
            ));
        }
        let key = r.cstr()?;
        if key.is_empty() {
            r.expect_end().map_err(|_| {
                ProtocolError::Malformed(
                    "invalid startup packet layout: expected terminator as last byte",
                )
            })?;
            return Ok(msg);
        }
        let value = r.cstr()?;
        if let Some(option) = key.strip_prefix("_pq_.") {
            msg.protocol_options.push(format!("_pq_.{option}"));
        } else {
            msg.push(key, value);
        }
    }
}

/// Writes a StartupMessage (protocol 3.0) as pgwarden sends it to PostgreSQL.
pub fn write_startup<'a>(buf: &mut BytesMut, params: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a CancelRequest.
pub fn write_cancel(buf: &mut BytesMut, pid: u32, secret: u32) {
    buf.put_u32(16);
    buf.put_u32(CANCEL_REQUEST_CODE);
    buf.put_u32(pid);
    buf.put_u32(secret);
}

/// Writes an SSLRequest.
pub fn write_ssl_request(buf: &mut BytesMut) {
    buf.put_u32(8);
    buf.put_u32(SSL_REQUEST_CODE);
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        write_startup(
            &mut buf,
            [
                ("user", "alice"),
                ("database", "db"),
                ("application_name", ""),
            ],
        );
        let before = buf.len();
        let parsed = parse(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "consumed all {before} bytes");
        let StartupRequest::Startup(msg) = parsed else {
            panic!("not a startup: {parsed:?}")
        };
        assert_eq!(msg.minor, 0);
        assert_eq!(msg.get("user"), Some("alice"));
        assert_eq!(msg.get("database"), Some("db"));
        assert_eq!(msg.get("application_name"), Some(""));
        assert_eq!(msg.get("nope"), None);
    }

    #[test]
    fn cancel_and_ssl_round_trip() {
        let mut buf = BytesMut::new();
        write_cancel(&mut buf, 42, 0xdead_beef);
        write_ssl_request(&mut buf);
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(StartupRequest::Cancel {
                pid: 42,
                secret: 0xdead_beef
            })
        );
        assert_eq!(parse(&mut buf).unwrap(), Some(StartupRequest::Ssl));
        let mut gss = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30][..]);
        assert_eq!(parse(&mut gss).unwrap(), Some(StartupRequest::GssEnc));
    }

    #[test]
    fn parameters_keep_their_order_and_empty_values() {
        let mut buf = BytesMut::new();
        write_startup(
            &mut buf,
            [
                ("user", "u"),
                ("options", ""),
                ("application_name", "a b"),
                ("user", "second"),
            ],
        );
        let Some(StartupRequest::Startup(msg)) = parse(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(
            msg.params().collect::<Vec<_>>(),
            [
                ("user", "u"),
                ("options", ""),
                ("application_name", "a b"),
                ("user", "second")
            ]
        );
        assert_eq!(msg.get("user"), Some("u"), "the first of two");
        assert_eq!(msg.get("options"), Some(""));
        assert_eq!(msg, StartupMessage::new(0, msg.params()));
        let none = StartupMessage::new(0, []);
        assert_eq!(none.params().count(), 0);
        assert_eq!(none.packed_params(), "");
    }

    #[test]
    fn newer_minor_and_protocol_options_are_kept_apart() {
        let mut body = Vec::new();
        body.extend_from_slice(&(PROTOCOL_3_0 | 2).to_be_bytes());
        body.extend_from_slice(b"user\0u\0_pq_.compression\0on\0\0");
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32 + 4);
        buf.put_slice(&body);
        let Some(StartupRequest::Startup(msg)) = parse(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(msg.minor, 2);
        assert_eq!(msg.params().collect::<Vec<_>>(), [("user", "u")]);
        assert_eq!(msg.protocol_options, vec!["_pq_.compression".to_string()]);
    }

    #[test]
    fn malformed_packets_are_errors() {
        for bad in [
            &[0u8, 0, 0, 4][..],                                    // shorter than a code
            &[0, 0, 0xff, 0xff][..],                                // too long
            &[0, 0, 0, 12, 0, 3, 0, 0, b'u', 0, b'x', 0][..],       // no terminator
            &[0, 0, 0, 10, 0, 3, 0, 0, b'u', b'x'][..],             // key without NUL
            &[0, 0, 0, 8, 0, 2, 0, 0][..],                          // protocol 2
            &[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 0][..], // SSLRequest with a body
            &[0, 0, 0, 10, 0, 3, 0, 0, 0, 0][..],                   // bytes after the terminator
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(parse(&mut buf).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn incomplete_is_none() {
        let mut full = BytesMut::new();
        write_startup(&mut full, [("user", "u")]);
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None);
        }
    }
}
