//! PostgreSQL wire protocol 3.0 as pure bytes: framing, the startup packets, and one module per direction.
//!
//! No sockets, no tokio, no config: parsing takes `&[u8]`/`BytesMut` and returns `Ok(None)` on incomplete
//! input; encoding appends to a `BytesMut` and back-patches lengths. On the forwarding path the pooler only
//! peeks headers ([`frame::peek`]) and moves raw bytes.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use frame::{Frame, HEADER_LEN, Header};

/// A frame that can never become valid. Each one closes the offending connection with SQLSTATE 08P01.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid message length {len} for message type '{}'", char::from(*tag))]
    BadLength { tag: u8, len: u32 },
    #[error("message of type '{}' is {len} bytes, over max_packet_size {max}", char::from(*tag))]
    TooLarge { tag: u8, len: u32, max: u32 },
    #[error("invalid length of startup packet: {0}")]
    BadStartupLength(u32),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedVersion { major: u32, minor: u32 },
    #[error("message is shorter than its fields")]
    Truncated,
    #[error("string field is missing its terminator")]
    MissingNul,
    #[error("string field is not valid UTF-8")]
    NotUtf8,
    #[error("message has bytes after its last field")]
    TrailingBytes,
    #[error("{0}")]
    Malformed(&'static str),
}

/// SQLSTATE for protocol violations.
pub const PROTOCOL_VIOLATION: &str = "08P01";

/// The NUL-separated fields of `packed`, in order, as `packed.split('\0')` gives them (an empty last one
/// after a trailing NUL). A plain byte loop: `split` searches for a `char`, which on these short fields
/// (a startup packet's parameters, a session's tracked values) cost several times more.
pub fn nul_fields(packed: &str) -> impl Iterator<Item = &str> + Clone {
    let mut rest = Some(packed);
    std::iter::from_fn(move || {
        let fields = rest?;
        Some(match fields.bytes().position(|b| b == 0) {
            Some(end) => {
                rest = Some(&fields[end + 1..]);
                &fields[..end]
            }
            None => {
                rest = None;
                fields
            }
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn nul_fields_split_as_str_split_does() {
        for packed in [
            "",
            "\0",
            "a",
            "a\0",
            "\0a",
            "ab\0\0cd\0é\0",
            "user\0bob\0database\0db",
        ] {
            assert_eq!(
                super::nul_fields(packed).collect::<Vec<_>>(),
                packed.split('\0').collect::<Vec<_>>(),
                "{packed:?}"
            );
        }
    }
}
