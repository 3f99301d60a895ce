//! Messages from a server (PostgreSQL, or pgwarden acting as one) to a client.
//!
//! On the forwarding path only the tag is looked at; the types here are for the messages pgwarden acts on
//! (authentication, ParameterStatus, BackendKeyData, ReadyForQuery, errors) and the ones it writes itself.

use bytes::{BufMut, BytesMut};

use super::ProtocolError;
use super::frame::Reader;

pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const DATA_ROW: u8 = b'D';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const NO_DATA: u8 = b'n';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// The transaction status reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            b'I' => Ok(Self::Idle),
            b'T' => Ok(Self::InTransaction),
            b'E' => Ok(Self::Failed),
            _ => Err(ProtocolError::Malformed(
                "unknown transaction status in ReadyForQuery",
            )),
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}

/// An `Authentication*` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI: methods pgwarden cannot answer.
    Unsupported(i32),
}

impl<'a> Authentication<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body);
        let code = r.i32()?;
        let auth = match code {
            0 => Self::Ok,
            3 => Self::CleartextPassword,
            5 => {
                let s = r.bytes(4)?;
                Self::Md5Password {
                    salt: [s[0], s[1], s[2], s[3]],
                }
            }
            10 => {
                let mut mechanisms = Vec::new();
                loop {
                    let m = r.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m);
                }
                Self::Sasl { mechanisms }
            }
            11 => return Ok(Self::SaslContinue(r.rest())),
            12 => return Ok(Self::SaslFinal(r.rest())),
            other => return Ok(Self::Unsupported(other)),
        };
        r.expect_end()?;
        Ok(auth)
    }
}

/// Parses a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let mut r = Reader::new(body);
    let name = r.cstr()?;
    let value = r.cstr()?;
    r.expect_end()?;
    Ok((name, value))
}

/// Parses a BackendKeyData body into (pid, secret). Protocol 3.0 keys are 4 bytes.
pub fn parse_backend_key_data(body: &[u8]) -> Result<(u32, u32), ProtocolError> {
    let mut r = Reader::new(body);
    let pid = r.u32()?;
    let secret = r.u32()?;
    r.expect_end()?;
    Ok((pid, secret))
}

/// Parses a DataRow body: one value per column, `None` for NULL.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(body);
    let n = r.i16()?;
    let n = usize::try_from(n)
        .map_err(|_| ProtocolError::Malformed("negative column count in DataRow"))?;
    let mut values = Vec::with_capacity(n.min(r.remaining() / 4 + 1));
    for _ in 0..n {
        let len = r.i32()?;
        values.push(if len < 0 {
            None
        } else {
            Some(r.bytes(len as usize)?)
        });
    }
    r.expect_end()?;
    Ok(values)
}

/// Parses a ReadyForQuery body.
pub fn parse_ready_for_query(body: &[u8]) -> Result<TransactionStatus, ProtocolError> {
    match body {
        [b] => TransactionStatus::from_byte(*b),
        _ => Err(ProtocolError::Malformed(
            "ReadyForQuery body must be one byte",
        )),
    }
}

/// The fields of an ErrorResponse or NoticeResponse, owned (these are rare and often outlive the buffer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorFields {
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body);
        let mut out = Self::default();
        let mut localized_severity = None;
        loop {
            let field = r.u8()?;
            if field == 0 {
                break;
            }
            let value = String::from_utf8_lossy(r.cstr_bytes()?).into_owned();
            match field {
                b'V' => out.severity = value,
                b'S' => localized_severity = Some(value),
                b'C' => out.code = value,
                b'M' => out.message = value,
                b'D' => out.detail = Some(value),
                b'H' => out.hint = Some(value),
                _ => {}
            }
        }
        if out.severity.is_empty() {
            out.severity = localized_severity.unwrap_or_default();
        }
        Ok(out)
    }

    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)?;
        if !self.code.is_empty() {
            write!(f, " (SQLSTATE {})", self.code)?;
        }
        Ok(())
    }
}

/// Severity of a message pgwarden itself reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
    Log,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Notice => "NOTICE",
            Self::Warning => "WARNING",
            Self::Log => "LOG",
        }
    }
}

/// Starts a message: writes the tag and a length placeholder, returns where the length goes.
pub(crate) fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    at
}

/// Back-patches the length of a message begun at `at`.
pub(crate) fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside a string would end it early on the wire; PostgreSQL never sends one, and our own texts
    // never contain one, but a client-supplied name might: cut it there rather than corrupt the frame.
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    buf.put_slice(&bytes[..end]);
    buf.put_u8(0);
}

/// Writes an ErrorResponse or NoticeResponse with the fields PostgreSQL always sends.
pub fn write_error_fields(buf: &mut BytesMut, tag: u8, fields: &ErrorFields) {
    let at = begin(buf, tag);
    for (field, value) in [
        (b'S', &fields.severity),
        (b'V', &fields.severity),
        (b'C', &fields.code),
        (b'M', &fields.message),
    ] {
        buf.put_u8(field);
        put_cstr(buf, value);
    }
    for (field, value) in [(b'D', &fields.detail), (b'H', &fields.hint)] {
        if let Some(value) = value {
            buf.put_u8(field);
            put_cstr(buf, value);
        }
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// The fields of an ErrorResponse or NoticeResponse body, in order, as (field type, value).
pub fn error_fields(body: &[u8]) -> Result<Vec<(u8, &[u8])>, ProtocolError> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    loop {
        let field = r.u8()?;
        if field == 0 {
            return Ok(out);
        }
        out.push((field, r.cstr_bytes()?));
    }
}

/// Writes an ErrorResponse or NoticeResponse with `fields` (as [`error_fields`] returns them).
pub fn write_raw_error_fields(buf: &mut BytesMut, tag: u8, fields: &[(u8, &[u8])]) {
    let at = begin(buf, tag);
    for &(field, value) in fields {
        buf.put_u8(field);
        buf.put_slice(value);
        buf.put_u8(0);
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// Writes an ErrorResponse.
pub fn write_error(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let fields = ErrorFields {
        severity: severity.as_str().to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
        ..ErrorFields::default()
    };
    write_error_fields(buf, tag::ERROR_RESPONSE, &fields);
}

/// Writes a NoticeResponse.
pub fn write_notice(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let fields = ErrorFields {
        severity: severity.as_str().to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
        ..ErrorFields::default()
    };
    write_error_fields(buf, tag::NOTICE_RESPONSE, &fields);
}

pub fn write_auth_ok(buf: &mut BytesMut) {
    write_auth(buf, 0, &[]);
}

pub fn write_auth_cleartext(buf: &mut BytesMut) {
    write_auth(buf, 3, &[]);
}

pub fn write_auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    write_auth(buf, 5, &salt);
}

pub fn write_auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let at = begin(buf, tag::AUTHENTICATION);
    buf.put_i32(10);
    for m in mechanisms {
        put_cstr(buf, m);
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn write_auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    write_auth(buf, 11, data);
}

pub fn write_auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    write_auth(buf, 12, data);
}

fn write_auth(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let at = begin(buf, tag::AUTHENTICATION);
    buf.put_i32(code);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn write_parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, tag::PARAMETER_STATUS);
    put_cstr(buf, name);
    put_cstr(buf, value);
    finish(buf, at);
}

pub fn write_backend_key_data(buf: &mut BytesMut, pid: u32, secret: u32) {
    let at = begin(buf, tag::BACKEND_KEY_DATA);
    buf.put_u32(pid);
    buf.put_u32(secret);
    finish(buf, at);
}

pub fn write_ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    let at = begin(buf, tag::READY_FOR_QUERY);
    buf.put_u8(status.as_byte());
    finish(buf, at);
}

/// NegotiateProtocolVersion: the newest minor version we support (0) and the options we don't.
pub fn write_negotiate_protocol_version(
    buf: &mut BytesMut,
    newest_minor: u32,
    unsupported: &[String],
) {
    let at = begin(buf, tag::NEGOTIATE_PROTOCOL_VERSION);
    buf.put_u32((3 << 16) | newest_minor);
    buf.put_u32(unsupported.len() as u32);
    for option in unsupported {
        put_cstr(buf, option);
    }
    finish(buf, at);
}

pub fn write_command_complete(buf: &mut BytesMut, command_tag: &str) {
    let at = begin(buf, tag::COMMAND_COMPLETE);
    put_cstr(buf, command_tag);
    finish(buf, at);
}

/// One column of a RowDescription: name, type OID and type size (-1 for variable length). Text format, no
/// table, no type modifier: what a pooler's own result sets need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    pub name: &'a str,
    pub type_oid: u32,
    pub type_size: i16,
}

/// Writes a RowDescription for text-format columns.
pub fn write_row_description(buf: &mut BytesMut, columns: &[Column<'_>]) {
    let at = begin(buf, tag::ROW_DESCRIPTION);
    buf.put_u16(columns.len() as u16);
    for c in columns {
        put_cstr(buf, c.name);
        buf.put_u32(0); // table OID
        buf.put_u16(0); // column number
        buf.put_u32(c.type_oid);
        buf.put_i16(c.type_size);
        buf.put_i32(-1); // type modifier
        buf.put_u16(0); // text format
    }
    finish(buf, at);
}

/// Writes a DataRow; `None` is SQL NULL.
pub fn write_data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    let at = begin(buf, tag::DATA_ROW);
    buf.put_u16(values.len() as u16);
    for v in values {
        match v {
            Some(v) => {
                buf.put_u32(v.len() as u32);
                buf.put_slice(v.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

pub fn write_empty_query_response(buf: &mut BytesMut) {
    let at = begin(buf, tag::EMPTY_QUERY_RESPONSE);
    finish(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_description_and_data_row_round_trip() {
        let mut buf = BytesMut::new();
        let cols = [
            Column {
                name: "database",
                type_oid: 25,
                type_size: -1,
            },
            Column {
                name: "cl_active",
                type_oid: 23,
                type_size: 4,
            },
        ];
        write_row_description(&mut buf, &cols);
        let f = one(&mut buf);
        assert_eq!(f.tag, tag::ROW_DESCRIPTION);
        let mut expected = vec![0u8, 2];
        for (name, oid, size) in [("database", 25u32, -1i16), ("cl_active", 23, 4)] {
            expected.extend_from_slice(name.as_bytes());
            expected.push(0);
            expected.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            expected.extend_from_slice(&oid.to_be_bytes());
            expected.extend_from_slice(&size.to_be_bytes());
            expected.extend_from_slice(&(-1i32).to_be_bytes());
            expected.extend_from_slice(&[0, 0]);
        }
        assert_eq!(&f.body[..], &expected[..]);

        write_data_row(&mut buf, &[Some("p0"), None, Some("")]);
        let f = one(&mut buf);
        assert_eq!(f.tag, tag::DATA_ROW);
        let row = parse_data_row(&f.body).expect("parses");
        assert_eq!(row, vec![Some(&b"p0"[..]), None, Some(&b""[..])]);
    }
    use crate::protocol::frame::split;

    fn one(buf: &mut BytesMut) -> crate::protocol::Frame {
        split(buf, u32::MAX).unwrap().expect("a whole frame")
    }

    #[test]
    fn auth_round_trips() {
        let mut buf = BytesMut::new();
        write_auth_ok(&mut buf);
        write_auth_cleartext(&mut buf);
        write_auth_md5(&mut buf, [1, 2, 3, 4]);
        write_auth_sasl(&mut buf, &["SCRAM-SHA-256"]);
        write_auth_sasl_continue(&mut buf, b"r=abc");
        write_auth_sasl_final(&mut buf, b"v=xyz");
        let expect = [
            Authentication::Ok,
            Authentication::CleartextPassword,
            Authentication::Md5Password { salt: [1, 2, 3, 4] },
            Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"],
            },
            Authentication::SaslContinue(b"r=abc"),
            Authentication::SaslFinal(b"v=xyz"),
        ];
        for e in expect {
            let f = one(&mut buf);
            assert_eq!(f.tag, tag::AUTHENTICATION);
            assert_eq!(Authentication::parse(&f.body).unwrap(), e);
        }
        assert!(buf.is_empty());
        assert_eq!(
            Authentication::parse(&7i32.to_be_bytes()).unwrap(),
            Authentication::Unsupported(7)
        );
        assert!(
            Authentication::parse(&[0, 0, 0, 5, 1]).is_err(),
            "md5 without a full salt"
        );
    }

    #[test]
    fn status_key_ready_round_trip() {
        let mut buf = BytesMut::new();
        write_parameter_status(&mut buf, "TimeZone", "UTC");
        write_backend_key_data(&mut buf, 7, 99);
        write_ready_for_query(&mut buf, TransactionStatus::Failed);
        assert_eq!(
            parse_parameter_status(&one(&mut buf).body).unwrap(),
            ("TimeZone", "UTC")
        );
        assert_eq!(
            parse_backend_key_data(&one(&mut buf).body).unwrap(),
            (7, 99)
        );
        assert_eq!(
            parse_ready_for_query(&one(&mut buf).body).unwrap(),
            TransactionStatus::Failed
        );
        assert!(parse_ready_for_query(b"X").is_err());
        assert!(parse_ready_for_query(b"").is_err());
    }

    #[test]
    fn error_round_trip_and_nul_safety() {
        let mut buf = BytesMut::new();
        let fields = ErrorFields {
            severity: "FATAL".into(),
            code: "28P01".into(),
            message: "password authentication failed for user \"bob\"".into(),
            detail: Some("d".into()),
            hint: None,
        };
        write_error_fields(&mut buf, tag::ERROR_RESPONSE, &fields);
        write_error(&mut buf, Severity::Error, "08P01", "bad\0name");
        let f = one(&mut buf);
        assert_eq!(f.tag, b'E');
        let parsed = ErrorFields::parse(&f.body).unwrap();
        assert_eq!(parsed, fields);
        assert!(parsed.is_fatal());
        let parsed = ErrorFields::parse(&one(&mut buf).body).unwrap();
        assert_eq!(
            parsed.message, "bad",
            "an embedded NUL cannot break framing"
        );
        assert!(ErrorFields::parse(b"Mabc").is_err());
    }

    #[test]
    fn negotiate_and_misc() {
        let mut buf = BytesMut::new();
        write_negotiate_protocol_version(&mut buf, 0, &["_pq_.x".to_string()]);
        let f = one(&mut buf);
        assert_eq!(f.tag, b'v');
        assert_eq!(&f.body[..], b"\x00\x03\x00\x00\x00\x00\x00\x01_pq_.x\0");
        write_command_complete(&mut buf, "SET");
        write_empty_query_response(&mut buf);
        assert_eq!(&one(&mut buf).body[..], b"SET\0");
        assert_eq!(one(&mut buf).tag, b'I');
    }
}
