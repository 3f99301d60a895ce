//! Wire frames for the codec benchmarks, written with pgwarden's own encoders where it has them
//! (RowDescription, DataRow, Bind and friends are written here: pgwarden only forwards those).

use bytes::{BufMut, BytesMut};
use pgwarden::protocol::backend::{self, TransactionStatus};
use pgwarden::protocol::{frontend, startup};

/// What `pgbench -S` asks (simple protocol): one account's balance.
pub const SELECT_ONLY_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 71243;";

/// A Query frame holding `sql`.
pub fn query(sql: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    frontend::write_query(&mut buf, sql);
    buf
}

/// `pgbench -S -M simple`, one transaction: the client's Query.
pub fn select_only_request() -> BytesMut {
    query(SELECT_ONLY_SQL)
}

/// `pgbench -S -M prepared`, one transaction after the first: Bind, Describe (portal), Execute, Sync.
pub fn prepared_select_only_request() -> BytesMut {
    let mut buf = BytesMut::new();
    message(&mut buf, b'B', |b| {
        b.put_slice(b"\0P0_1\0");
        b.put_i16(0); // parameter formats: all text
        b.put_i16(1);
        b.put_i32(5);
        b.put_slice(b"71243");
        b.put_i16(0); // result formats: all text
    });
    message(&mut buf, b'D', |b| b.put_slice(b"P\0"));
    message(&mut buf, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
    message(&mut buf, b'S', |_| {});
    buf
}

/// The server's answer to [`select_only_request`]: RowDescription, DataRow, CommandComplete,
/// ReadyForQuery.
pub fn select_only_response() -> BytesMut {
    let mut buf = BytesMut::new();
    row_description(&mut buf, &[("abalance", 23, 4)]);
    data_row(&mut buf, &[Some(b"0")]);
    backend::write_command_complete(&mut buf, "SELECT 1");
    backend::write_ready_for_query(&mut buf, TransactionStatus::Idle);
    buf
}

/// The server's answer to [`prepared_select_only_request`]: BindComplete, RowDescription, DataRow,
/// CommandComplete, ReadyForQuery.
pub fn prepared_select_only_response() -> BytesMut {
    let mut buf = BytesMut::new();
    message(&mut buf, b'2', |_| {});
    buf.extend_from_slice(&select_only_response());
    buf
}

/// A typical result set: RowDescription of four columns, `rows` DataRows, CommandComplete,
/// ReadyForQuery.
pub fn result_set(rows: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    row_description(
        &mut buf,
        &[
            ("id", 23, 4),
            ("name", 25, -1),
            ("email", 25, -1),
            ("created_at", 1184, 8),
        ],
    );
    for i in 0..rows {
        let id = (1000 + i).to_string();
        let name = format!("customer {i}");
        let email = format!("customer{i}@example.com");
        data_row(
            &mut buf,
            &[
                Some(id.as_bytes()),
                Some(name.as_bytes()),
                Some(email.as_bytes()),
                Some(b"2025-06-01 12:34:56.789+00"),
            ],
        );
    }
    backend::write_command_complete(&mut buf, &format!("SELECT {rows}"));
    backend::write_ready_for_query(&mut buf, TransactionStatus::Idle);
    buf
}

/// The startup packet of a JDBC client (the driver sends its session settings up front).
pub fn startup_packet() -> BytesMut {
    let mut buf = BytesMut::new();
    startup::write_startup(
        &mut buf,
        [
            ("user", "app"),
            ("database", "appdb"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "2"),
            ("application_name", "PostgreSQL JDBC Driver"),
        ],
    );
    buf
}

/// Appends one message: tag, length (back-patched), body.
fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = u32::try_from(buf.len() - at).expect("small message");
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// RowDescription: (name, type oid, type size) per column, text format.
fn row_description(buf: &mut BytesMut, columns: &[(&str, u32, i16)]) {
    message(buf, backend::tag::ROW_DESCRIPTION, |b| {
        b.put_i16(i16::try_from(columns.len()).expect("few columns"));
        for (name, oid, size) in columns {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_u32(0); // table oid
            b.put_i16(0); // column number
            b.put_u32(*oid);
            b.put_i16(*size);
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text
        }
    });
}

fn data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    message(buf, backend::tag::DATA_ROW, |b| {
        b.put_i16(i16::try_from(values.len()).expect("few columns"));
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).expect("small value"));
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwarden::protocol::frame;

    /// Every fixture is a run of whole, well-formed frames (so the codec benches never measure an error).
    #[test]
    fn fixtures_frame_cleanly() {
        let tags = |mut buf: BytesMut| {
            let mut tags = String::new();
            while let Some(f) = frame::split(&mut buf, 1 << 20).unwrap() {
                tags.push(char::from(f.tag));
            }
            assert!(buf.is_empty(), "trailing bytes");
            tags
        };
        assert_eq!(tags(select_only_request()), "Q");
        assert_eq!(tags(prepared_select_only_request()), "BDES");
        assert_eq!(tags(select_only_response()), "TDCZ");
        assert_eq!(tags(prepared_select_only_response()), "2TDCZ");
        assert_eq!(tags(result_set(3)), "TDDDCZ");
        let mut buf = result_set(1);
        let _row_description = frame::split(&mut buf, 1 << 20).unwrap();
        let row = frame::split(&mut buf, 1 << 20).unwrap().unwrap();
        let values = backend::parse_data_row(&row.body).unwrap();
        assert_eq!(values.len(), 4);
        assert_eq!(values[2], Some(&b"customer0@example.com"[..]));
    }

    #[test]
    fn startup_packet_parses() {
        let mut buf = startup_packet();
        let Some(startup::StartupRequest::Startup(msg)) = startup::parse(&mut buf).unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!(msg.get("user"), Some("app"));
        assert_eq!(msg.get("application_name"), Some("PostgreSQL JDBC Driver"));
        assert!(buf.is_empty());
    }
}
