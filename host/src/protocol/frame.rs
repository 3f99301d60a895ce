//! Framing of protocol 3.0 messages: `tag (1 byte) | length (4 bytes, includes itself) | body`.
//!
//! Parsing never errors on incomplete input: it returns `Ok(None)` and the caller reads more. Errors are
//! reserved for frames that can never become valid (a length below 4, or above the configured maximum).

use bytes::{Buf, Bytes, BytesMut};

use super::ProtocolError;

/// Bytes of a message header: the tag and the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// A peeked message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type byte.
    pub tag: u8,
    /// The whole frame size in bytes: tag + length field + body.
    pub frame_len: usize,
}

impl Header {
    /// Length of the body (what follows the 5-byte header).
    pub fn body_len(&self) -> usize {
        self.frame_len - HEADER_LEN
    }
}

/// Peeks the header at the start of `buf`.
///
/// `max_len` bounds the length field (PgBouncer's `max_packet_size`); a larger frame is a protocol violation
/// rather than something to buffer.
pub fn peek(buf: &[u8], max_len: u32) -> Result<Option<Header>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::BadLength { tag, len });
    }
    if len > max_len {
        return Err(ProtocolError::TooLarge {
            tag,
            len,
            max: max_len,
        });
    }
    Ok(Some(Header {
        tag,
        frame_len: len as usize + 1,
    }))
}

/// A complete message split off a read buffer; `body` excludes the header.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("tag", &char::from(self.tag))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Splits one complete message off the front of `buf`, or returns `Ok(None)` if it is not all there yet.
pub fn split(buf: &mut BytesMut, max_len: u32) -> Result<Option<Frame>, ProtocolError> {
    let Some(header) = peek(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len {
        return Ok(None);
    }
    let mut frame = buf.split_to(header.frame_len);
    frame.advance(HEADER_LEN);
    Ok(Some(Frame {
        tag: header.tag,
        body: frame.freeze(),
    }))
}

/// A cursor over a message body with the field readers the protocol needs. Every read is bounds-checked.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        let (&b, rest) = self.buf.split_first().ok_or(ProtocolError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string, without its terminator.
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let nul = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::MissingNul)?;
        let (s, rest) = self.buf.split_at(nul);
        self.buf = &rest[1..];
        Ok(s)
    }

    /// A NUL-terminated string that must be UTF-8.
    pub fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(self.cstr_bytes()?).map_err(|_| ProtocolError::NotUtf8)
    }

    pub fn expect_end(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn incomplete_input_is_none_not_error() {
        let full = msg(b'Q', b"select 1\0");
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(split(&mut buf, 1 << 20).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
        let mut buf = BytesMut::from(&full[..]);
        let frame = split(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(frame.tag, b'Q');
        assert_eq!(&frame.body[..], b"select 1\0");
        assert!(buf.is_empty());
    }

    #[test]
    fn splits_back_to_back_frames() {
        let mut buf = BytesMut::new();
        buf.put_slice(&msg(b'S', b""));
        buf.put_slice(&msg(b'H', b""));
        buf.put_slice(&msg(b'X', b"")[..3]);
        assert_eq!(split(&mut buf, 100).unwrap().unwrap().tag, b'S');
        assert_eq!(split(&mut buf, 100).unwrap().unwrap().tag, b'H');
        assert_eq!(split(&mut buf, 100).unwrap(), None);
    }

    #[test]
    fn bad_and_oversized_lengths_are_errors() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert!(matches!(
            split(&mut buf, 100),
            Err(ProtocolError::BadLength { .. })
        ));
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 1, 0][..]);
        assert!(matches!(
            split(&mut buf, 100),
            Err(ProtocolError::TooLarge { len: 256, .. })
        ));
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(
            matches!(split(&mut buf, u32::MAX), Ok(None)),
            "huge but allowed: wait for more"
        );
    }

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = Reader::new(b"ab\0\x00\x01");
        assert_eq!(r.cstr().unwrap(), "ab");
        assert_eq!(r.i16().unwrap(), 1);
        assert!(matches!(r.u8(), Err(ProtocolError::Truncated)));
        assert!(matches!(
            Reader::new(b"abc").cstr(),
            Err(ProtocolError::MissingNul)
        ));
        assert!(matches!(
            Reader::new(b"\xff\0").cstr(),
            Err(ProtocolError::NotUtf8)
        ));
        assert!(matches!(
            Reader::new(b"a").i32(),
            Err(ProtocolError::Truncated)
        ));
    }
}
