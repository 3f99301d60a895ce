//! Messages from a client to a server (a client to pgwarden, or pgwarden to PostgreSQL).

use bytes::{BufMut, BytesMut};

use super::ProtocolError;
use super::backend::{begin, finish, put_cstr};
use super::frame::Reader;

pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this tag; the auth state says which.
    pub const PASSWORD: u8 = b'p';
}

/// What a client message means to the pooler's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A simple Query: one ReadyForQuery will answer it.
    Query,
    /// FunctionCall: answered by one ReadyForQuery, like a Query.
    FunctionCall,
    /// Parse/Bind/Describe/Execute/Close: part of an extended-protocol batch that a Sync will close.
    Extended,
    /// Sync: one ReadyForQuery will answer the batch.
    Sync,
    /// Flush: asks for pending output, does not end the batch.
    Flush,
    /// CopyData/CopyDone/CopyFail: the client side of COPY FROM STDIN.
    Copy,
    Terminate,
    Password,
    Unknown,
}

impl Kind {
    pub fn of(tag: u8) -> Self {
        match tag {
            tag::QUERY => Self::Query,
            tag::FUNCTION_CALL => Self::FunctionCall,
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE => Self::Extended,
            tag::SYNC => Self::Sync,
            tag::FLUSH => Self::Flush,
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => Self::Copy,
            tag::TERMINATE => Self::Terminate,
            tag::PASSWORD => Self::Password,
            _ => Self::Unknown,
        }
    }
}

/// The SQL text of a Query message.
pub fn parse_query(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = Reader::new(body);
    let sql = r.cstr()?;
    r.expect_end()?;
    Ok(sql)
}

/// A Parse message: statement name, SQL text, parameter type OIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a str,
    pub query: &'a str,
    pub param_types: Vec<u32>,
}

impl<'a> Parse<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body);
        let name = r.cstr()?;
        let query = r.cstr()?;
        let n = r.i16()?;
        let n = usize::try_from(n)
            .map_err(|_| ProtocolError::Malformed("negative parameter count in Parse"))?;
        let mut param_types = Vec::with_capacity(n.min(r.remaining() / 4));
        for _ in 0..n {
            param_types.push(r.u32()?);
        }
        r.expect_end()?;
        Ok(Self {
            name,
            query,
            param_types,
        })
    }
}

/// A PasswordMessage body: the password, NUL-terminated.
pub fn parse_password(body: &[u8]) -> Result<&[u8], ProtocolError> {
    let mut r = Reader::new(body);
    let pw = r.cstr_bytes()?;
    r.expect_end()?;
    Ok(pw)
}

/// A SASLInitialResponse body: mechanism name and the initial client response (absent when length is -1).
pub fn parse_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        r.bytes(len as usize)?
    };
    r.expect_end()?;
    Ok((mechanism, data))
}

pub fn write_query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, tag::QUERY);
    put_cstr(buf, sql);
    finish(buf, at);
}

/// Parse with no parameter types given (the server infers them).
pub fn write_parse(buf: &mut BytesMut, name: &str, sql: &str) {
    let at = begin(buf, tag::PARSE);
    put_cstr(buf, name);
    put_cstr(buf, sql);
    buf.put_i16(0);
    finish(buf, at);
}

/// Bind with every parameter and result column in text format; `None` is NULL.
pub fn write_bind_text(
    buf: &mut BytesMut,
    portal: &str,
    statement: &str,
    params: &[Option<String>],
) {
    let at = begin(buf, tag::BIND);
    put_cstr(buf, portal);
    put_cstr(buf, statement);
    buf.put_i16(0);
    buf.put_i16(i16::try_from(params.len()).unwrap_or(i16::MAX));
    for p in params.iter().take(i16::MAX as usize) {
        match p {
            Some(v) => {
                buf.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                buf.put_slice(v.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    buf.put_i16(0);
    finish(buf, at);
}

/// Execute a portal, all rows.
pub fn write_execute(buf: &mut BytesMut, portal: &str) {
    let at = begin(buf, tag::EXECUTE);
    put_cstr(buf, portal);
    buf.put_i32(0);
    finish(buf, at);
}

pub fn write_terminate(buf: &mut BytesMut) {
    let at = begin(buf, tag::TERMINATE);
    finish(buf, at);
}

pub fn write_sync(buf: &mut BytesMut) {
    let at = begin(buf, tag::SYNC);
    finish(buf, at);
}

pub fn write_password(buf: &mut BytesMut, password: &[u8]) {
    let at = begin(buf, tag::PASSWORD);
    buf.put_slice(password);
    buf.put_u8(0);
    finish(buf, at);
}

pub fn write_sasl_initial(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, tag::PASSWORD);
    put_cstr(buf, mechanism);
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn write_sasl_response(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, tag::PASSWORD);
    buf.put_slice(data);
    finish(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::split;

    #[test]
    fn query_and_password_round_trip() {
        let mut buf = BytesMut::new();
        write_query(&mut buf, "select 1");
        write_password(&mut buf, b"md5abc");
        write_sasl_initial(&mut buf, "SCRAM-SHA-256", b"n,,n=,r=x");
        write_sasl_response(&mut buf, b"c=biws");
        write_sync(&mut buf);
        write_terminate(&mut buf);
        let mut next = || split(&mut buf, u32::MAX).unwrap().unwrap();
        let f = next();
        assert_eq!((f.tag, parse_query(&f.body).unwrap()), (b'Q', "select 1"));
        assert_eq!(parse_password(&next().body).unwrap(), b"md5abc");
        assert_eq!(
            parse_sasl_initial(&next().body).unwrap(),
            ("SCRAM-SHA-256", &b"n,,n=,r=x"[..])
        );
        assert_eq!(&next().body[..], b"c=biws");
        assert_eq!(Kind::of(next().tag), Kind::Sync);
        assert_eq!(Kind::of(next().tag), Kind::Terminate);
    }

    #[test]
    fn parse_message() {
        let body = b"s1\0select $1\0\x00\x01\x00\x00\x00\x17";
        let p = Parse::decode(body).unwrap();
        assert_eq!(
            p,
            Parse {
                name: "s1",
                query: "select $1",
                param_types: vec![23]
            }
        );
        assert!(
            Parse::decode(b"s1\0select\0\xff\xff").is_err(),
            "negative count"
        );
        assert!(
            Parse::decode(b"s1\0select\0\x00\x02\x00\x00\x00\x17").is_err(),
            "count beyond body"
        );
        assert!(
            Parse::decode(b"s1\0select\0\x00\x00\x01").is_err(),
            "trailing byte"
        );
    }

    #[test]
    fn sasl_initial_without_data() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            parse_sasl_initial(&body).unwrap(),
            ("SCRAM-SHA-256", &b""[..])
        );
        assert!(parse_sasl_initial(b"SCRAM-SHA-256\0\x00\x00\x00\x09abc").is_err());
    }

    #[test]
    fn kinds() {
        for (t, k) in [
            (b'P', Kind::Extended),
            (b'B', Kind::Extended),
            (b'E', Kind::Extended),
            (b'H', Kind::Flush),
        ] {
            assert_eq!(Kind::of(t), k);
        }
        assert_eq!(Kind::of(b'?'), Kind::Unknown);
    }
}
