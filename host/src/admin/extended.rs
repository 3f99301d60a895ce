//! The extended query protocol on the console, for drivers that use nothing else (psycopg 3 with binary
//! results or prepared statements, pgjdbc, tokio-postgres' `query`): Parse, Bind, Describe, Execute, Close,
//! Flush and Sync, without parameters. PgBouncer refuses it; pgwarden answers as PostgreSQL would.
//!
//! A command runs as a simple query does, and its answer is reshaped: RowDescription only for Describe,
//! no ReadyForQuery before Sync, columns in the binary format where Bind asked for it (text, int4, int8 and
//! numeric, the console's types). Describe runs a SHOW to learn its columns (SHOW changes nothing) and
//! keeps the rows for the portal's Execute; any other command describes as NoData and runs at Execute.
//! After an error every message up to Sync is skipped, as in PostgreSQL.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Console, command};
use crate::client::{ClientConn, End};
use crate::protocol::backend::{self, ErrorFields, Severity, TransactionStatus, tag as be};
use crate::protocol::frontend::tag as fe;
use crate::protocol::{Frame, PROTOCOL_VIOLATION, frame};

/// The statements and portals of one console session.
#[derive(Debug, Default)]
pub struct Extended {
    statements: HashMap<String, String>,
    portals: HashMap<String, Portal>,
    /// An error was sent: skip to Sync.
    failed: bool,
}

#[derive(Debug)]
struct Portal {
    query: String,
    /// Bind's result format codes (none: all text; one: for every column).
    formats: Vec<i16>,
    /// The answer Describe already produced (a SHOW), replayed by Execute.
    answer: Option<Answer>,
}

/// A command's answer, split the way the extended protocol sends it.
#[derive(Debug, Default)]
struct Answer {
    /// RowDescription, if the command returns rows.
    description: Option<Bytes>,
    /// Everything else up to (not including) ReadyForQuery: notices, rows, CommandComplete or the error.
    rest: Vec<Frame>,
}

impl Answer {
    fn failed(&self) -> bool {
        self.rest.iter().any(|f| f.tag == be::ERROR_RESPONSE)
    }
}

/// A malformed message: the frame it was in cannot be read.
#[derive(Debug)]
struct Malformed;

/// Reads a NUL-terminated string.
fn cstr(b: &mut Bytes) -> Result<String, Malformed> {
    let end = b.iter().position(|c| *c == 0).ok_or(Malformed)?;
    let s = String::from_utf8(b.split_to(end).to_vec()).map_err(|_| Malformed)?;
    b.advance(1);
    Ok(s)
}

fn i16_at(b: &mut Bytes) -> Result<i16, Malformed> {
    if b.remaining() < 2 {
        return Err(Malformed);
    }
    Ok(b.get_i16())
}

fn i32_at(b: &mut Bytes) -> Result<i32, Malformed> {
    if b.remaining() < 4 {
        return Err(Malformed);
    }
    Ok(b.get_i32())
}

fn i16_list(b: &mut Bytes) -> Result<Vec<i16>, Malformed> {
    let n = i16_at(b)?;
    (0..n).map(|_| i16_at(b)).collect()
}

/// Bind's parameter values: how many there are (their bytes are skipped).
fn skip_params(b: &mut Bytes) -> Result<usize, Malformed> {
    let n = i16_at(b)?;
    for _ in 0..n {
        let len = i32_at(b)?;
        if len > 0 {
            let len = usize::try_from(len).map_err(|_| Malformed)?;
            if b.remaining() < len {
                return Err(Malformed);
            }
            b.advance(len);
        }
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

impl Console {
    /// Handles one extended-protocol message. `Err` ends the session.
    pub(super) async fn extended(
        &self,
        ext: &mut Extended,
        conn: &mut ClientConn,
        f: &Frame,
    ) -> Result<(), End> {
        if f.tag == fe::SYNC {
            ext.failed = false;
            ext.portals.remove("");
            conn.send(|b| backend::write_ready_for_query(b, TransactionStatus::Idle));
            return conn.flush().await;
        }
        if f.tag == fe::FLUSH {
            return conn.flush().await;
        }
        if ext.failed {
            return Ok(());
        }
        let mut out = BytesMut::new();
        let res = match f.tag {
            fe::PARSE => Self::parse_msg(ext, f.body.clone(), &mut out),
            fe::BIND => Self::bind_msg(ext, f.body.clone(), &mut out),
            fe::DESCRIBE => {
                self.describe_msg(ext, conn, f.body.clone(), &mut out)
                    .await?
            }
            fe::EXECUTE => {
                self.execute_msg(ext, conn, f.body.clone(), &mut out)
                    .await?
            }
            fe::CLOSE => Self::close_msg(ext, f.body.clone(), &mut out),
            _ => Ok(()),
        };
        if res.is_err() {
            return Err(End::pooler("bad packet"));
        }
        conn.send(|b| b.extend_from_slice(&out));
        Ok(())
    }

    fn parse_msg(ext: &mut Extended, mut b: Bytes, out: &mut BytesMut) -> Result<(), Malformed> {
        let name = cstr(&mut b)?;
        let query = cstr(&mut b)?;
        let _types = i16_list(&mut b)?;
        // PostgreSQL reports a statement it cannot parse at Parse.
        match command::parse(&query) {
            Err(command::ParseError::Syntax) => {
                fail(
                    ext,
                    out,
                    PROTOCOL_VIOLATION,
                    &format!("invalid command '{query}', use SHOW HELP;"),
                );
                return Ok(());
            }
            Err(command::ParseError::BadArguments) => {
                fail(ext, out, PROTOCOL_VIOLATION, "bad arguments");
                return Ok(());
            }
            Ok(_) => {}
        }
        if !name.is_empty() && ext.statements.contains_key(&name) {
            let message = format!("prepared statement \"{name}\" already exists");
            fail(ext, out, "42P05", &message);
            return Ok(());
        }
        ext.statements.insert(name, query);
        put_empty(out, be::PARSE_COMPLETE);
        Ok(())
    }

    fn bind_msg(ext: &mut Extended, mut b: Bytes, out: &mut BytesMut) -> Result<(), Malformed> {
        let portal = cstr(&mut b)?;
        let statement = cstr(&mut b)?;
        let _param_formats = i16_list(&mut b)?;
        let params = skip_params(&mut b)?;
        let formats = i16_list(&mut b)?;
        let Some(query) = ext.statements.get(&statement).cloned() else {
            let message = format!("prepared statement \"{statement}\" does not exist");
            fail(ext, out, "26000", &message);
            return Ok(());
        };
        if params > 0 {
            let message = format!(
                "bind message supplies {params} parameters, but the admin console takes none"
            );
            fail(ext, out, PROTOCOL_VIOLATION, &message);
            return Ok(());
        }
        ext.portals.insert(
            portal,
            Portal {
                query,
                formats,
                answer: None,
            },
        );
        put_empty(out, be::BIND_COMPLETE);
        Ok(())
    }

    async fn describe_msg(
        &self,
        ext: &mut Extended,
        conn: &mut ClientConn,
        mut b: Bytes,
        out: &mut BytesMut,
    ) -> Result<Result<(), Malformed>, End> {
        if b.remaining() < 1 {
            return Ok(Err(Malformed));
        }
        let kind = b.get_u8();
        let Ok(name) = cstr(&mut b) else {
            return Ok(Err(Malformed));
        };
        match kind {
            b'S' => {
                let Some(query) = ext.statements.get(&name).cloned() else {
                    let message = format!("prepared statement \"{name}\" does not exist");
                    fail(ext, out, "26000", &message);
                    return Ok(Ok(()));
                };
                // No parameters.
                out.put_u8(be::PARAMETER_DESCRIPTION);
                out.put_u32(6);
                out.put_u16(0);
                let answer = self.describe(conn, &query).await?;
                write_description(out, answer.as_ref(), &[]);
            }
            b'P' => {
                let Some(mut portal) = ext.portals.remove(&name) else {
                    let message = format!("portal \"{name}\" does not exist");
                    fail(ext, out, "34000", &message);
                    return Ok(Ok(()));
                };
                portal.answer = self.describe(conn, &portal.query).await?;
                write_description(out, portal.answer.as_ref(), &portal.formats);
                ext.portals.insert(name, portal);
            }
            _ => return Ok(Err(Malformed)),
        }
        Ok(Ok(()))
    }

    /// Runs a SHOW to learn what it returns; `None` for any other command (it describes as NoData).
    async fn describe(&self, conn: &mut ClientConn, query: &str) -> Result<Option<Answer>, End> {
        let is_show = matches!(
            command::parse(query),
            Ok(command::Command::Plain { name, .. }) if name == "show" || name == "select"
        );
        if !is_show {
            return Ok(None);
        }
        self.answer(conn, query).await.map(Some)
    }

    /// Runs a command as a simple query would and splits its answer.
    async fn answer(&self, conn: &mut ClientConn, query: &str) -> Result<Answer, End> {
        let mut raw = BytesMut::new();
        self.run_command(conn, query, &mut raw).await?;
        let mut answer = Answer::default();
        while let Ok(Some(f)) = frame::split(&mut raw, u32::MAX) {
            match f.tag {
                be::READY_FOR_QUERY => {}
                be::ROW_DESCRIPTION => answer.description = Some(f.body),
                _ => answer.rest.push(f),
            }
        }
        Ok(answer)
    }

    async fn execute_msg(
        &self,
        ext: &mut Extended,
        conn: &mut ClientConn,
        mut b: Bytes,
        out: &mut BytesMut,
    ) -> Result<Result<(), Malformed>, End> {
        let Ok(name) = cstr(&mut b) else {
            return Ok(Err(Malformed));
        };
        let Some(mut portal) = ext.portals.remove(&name) else {
            let message = format!("portal \"{name}\" does not exist");
            fail(ext, out, "34000", &message);
            return Ok(Ok(()));
        };
        self.state
            .console
            .commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = match portal.answer.take() {
            Some(a) => a,
            None => self.answer(conn, &portal.query).await?,
        };
        let types = answer
            .description
            .as_ref()
            .map(|d| column_types(d))
            .unwrap_or_default();
        for f in &answer.rest {
            if f.tag == be::DATA_ROW && wants_binary(&portal.formats, types.len()) {
                write_binary_row(out, &f.body, &types, &portal.formats);
            } else {
                put_frame(out, f.tag, &f.body);
            }
        }
        if answer.failed() {
            ext.failed = true;
        }
        // A portal runs once; the unnamed one goes at Sync anyway.
        Ok(Ok(()))
    }

    fn close_msg(ext: &mut Extended, mut b: Bytes, out: &mut BytesMut) -> Result<(), Malformed> {
        if b.remaining() < 1 {
            return Err(Malformed);
        }
        let kind = b.get_u8();
        let name = cstr(&mut b)?;
        match kind {
            b'S' => {
                ext.statements.remove(&name);
            }
            b'P' => {
                ext.portals.remove(&name);
            }
            _ => return Err(Malformed),
        }
        put_empty(out, be::CLOSE_COMPLETE);
        Ok(())
    }
}

/// Sends an ErrorResponse (no ReadyForQuery: that comes at Sync) and skips to Sync.
fn fail(ext: &mut Extended, out: &mut BytesMut, code: &str, message: &str) {
    let fields = ErrorFields {
        severity: Severity::Error.as_str().to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
        detail: None,
        hint: None,
    };
    backend::write_error_fields(out, be::ERROR_RESPONSE, &fields);
    ext.failed = true;
}

fn put_empty(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_u32(4);
}

fn put_frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(u32::try_from(body.len() + 4).unwrap_or(u32::MAX));
    out.put_slice(body);
}

/// The format a column is sent in: Bind's codes (none: text; one: every column).
fn format_of(formats: &[i16], column: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(column).copied().unwrap_or(0),
    }
}

fn wants_binary(formats: &[i16], columns: usize) -> bool {
    (0..columns).any(|i| format_of(formats, i) == 1)
}

/// RowDescription with the format codes the portal will use, or NoData.
fn write_description(out: &mut BytesMut, answer: Option<&Answer>, formats: &[i16]) {
    let Some(desc) = answer.and_then(|a| a.description.as_ref()) else {
        return put_empty(out, be::NO_DATA);
    };
    let mut body = BytesMut::from(&desc[..]);
    // Each field: name\0, table oid (4), column (2), type oid (4), size (2), modifier (4), format (2).
    let mut at = 2;
    let mut column = 0;
    while at < body.len() {
        let Some(nul) = body[at..].iter().position(|c| *c == 0) else {
            break;
        };
        at += nul + 1 + 4 + 2 + 4 + 2 + 4;
        if at + 2 > body.len() {
            break;
        }
        body[at..at + 2].copy_from_slice(&format_of(formats, column).to_be_bytes());
        at += 2;
        column += 1;
    }
    put_frame(out, be::ROW_DESCRIPTION, &body);
}

/// The type oids of a RowDescription's columns.
fn column_types(desc: &[u8]) -> Vec<u32> {
    let mut types = Vec::new();
    let mut at = 2;
    while at < desc.len() {
        let Some(nul) = desc[at..].iter().position(|c| *c == 0) else {
            break;
        };
        at += nul + 1 + 4 + 2;
        let Some(oid) = desc.get(at..at + 4) else {
            break;
        };
        types.push(u32::from_be_bytes([oid[0], oid[1], oid[2], oid[3]]));
        at += 4 + 2 + 4 + 2;
    }
    types
}

/// A DataRow with the columns Bind asked for in binary re-encoded from the console's text.
fn write_binary_row(out: &mut BytesMut, body: &[u8], types: &[u32], formats: &[i16]) {
    let Ok(values) = backend::parse_data_row(body) else {
        return put_frame(out, be::DATA_ROW, body);
    };
    let mut row = BytesMut::new();
    row.put_u16(u16::try_from(values.len()).unwrap_or(0));
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else {
            row.put_i32(-1);
            continue;
        };
        let binary = if format_of(formats, i) == 1 {
            to_binary(types.get(i).copied().unwrap_or(25), v)
        } else {
            v.to_vec()
        };
        row.put_i32(i32::try_from(binary.len()).unwrap_or(i32::MAX));
        row.put_slice(&binary);
    }
    put_frame(out, be::DATA_ROW, &row);
}

/// The binary form of a console value: text as is, int4 and int8 big-endian, numeric PostgreSQL's
/// base-10000 digits.
fn to_binary(oid: u32, text: &[u8]) -> Vec<u8> {
    let s = std::str::from_utf8(text).unwrap_or("");
    match oid {
        23 => s.parse::<i32>().unwrap_or(0).to_be_bytes().to_vec(),
        20 => s.parse::<i64>().unwrap_or(0).to_be_bytes().to_vec(),
        1700 => numeric_binary(s.parse::<u64>().unwrap_or(0)),
        _ => text.to_vec(),
    }
}

/// A non-negative integer as a binary numeric: ndigits, weight, sign, dscale, then base-10000 digits
/// (most significant first, trailing zero digits dropped as PostgreSQL does).
fn numeric_binary(mut n: u64) -> Vec<u8> {
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(u16::try_from(n % 10_000).unwrap_or(0));
        n /= 10_000;
    }
    digits.reverse();
    let weight = i16::try_from(digits.len()).unwrap_or(1) - 1;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&u16::try_from(digits.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&(if digits.is_empty() { 0 } else { weight }).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_in_binary_as_postgresql_sends_them() {
        assert_eq!(numeric_binary(0), [0, 0, 0, 0, 0, 0, 0, 0]);
        // 12345678 = 1234|5678, weight 1.
        assert_eq!(
            numeric_binary(12_345_678),
            [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xd2, 0x16, 0x2e]
        );
        // 20000 = 2|0000: the zero digit goes, the weight stays.
        assert_eq!(numeric_binary(20_000), [0, 1, 0, 1, 0, 0, 0, 0, 0, 2]);
        assert_eq!(to_binary(23, b"-5"), (-5i32).to_be_bytes());
        assert_eq!(to_binary(25, b"abc"), b"abc");
    }

    #[test]
    fn descriptions_carry_the_portals_formats() {
        let mut desc = BytesMut::new();
        backend::write_row_description(
            &mut desc,
            &[
                backend::Column {
                    name: "a",
                    type_oid: 25,
                    type_size: -1,
                },
                backend::Column {
                    name: "bb",
                    type_oid: 23,
                    type_size: 4,
                },
            ],
        );
        let f = frame::split(&mut desc, u32::MAX)
            .expect("frame")
            .expect("whole");
        assert_eq!(column_types(&f.body), [25, 23]);
        let answer = Answer {
            description: Some(f.body),
            rest: Vec::new(),
        };
        let mut out = BytesMut::new();
        write_description(&mut out, Some(&answer), &[1]);
        let t = frame::split(&mut out, u32::MAX)
            .expect("frame")
            .expect("whole");
        assert_eq!(&t.body[t.body.len() - 2..], [0, 1]);
        let mut out = BytesMut::new();
        write_description(&mut out, None, &[]);
        assert_eq!(&out[..], [b'n', 0, 0, 0, 4]);
    }
}
