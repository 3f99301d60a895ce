//! Building the refusal a hook answers with.

use crate::types::Denial;

/// SQLSTATEs plugins commonly refuse with (PostgreSQL's codes, so that clients and drivers react to
/// them as they would to the server's own errors).
pub mod sqlstate {
    /// `invalid_authorization_specification`: a connection is refused (what routers deny with).
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    /// `invalid_password`.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `read_only_sql_transaction`: a write in a read-only session.
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    /// `insufficient_privilege`: the client may not run this.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// `feature_not_supported`.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `too_many_connections`.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// `internal_error`: the plugin itself is in a state it cannot work in.
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// A refusal with `sqlstate` and `message`, no DETAIL or HINT (add them with
/// [`Denial::with_detail`] and [`Denial::with_hint`]).
///
/// `sqlstate` is not checked here (so constants stay cheap to use); check operator-supplied codes
/// with [`is_valid_sqlstate`] when the configuration is read.
pub fn deny(sqlstate: impl Into<String>, message: impl Into<String>) -> Denial {
    Denial {
        sqlstate: sqlstate.into(),
        message: message.into(),
        detail: None,
        hint: None,
    }
}

impl Denial {
    /// The same refusal with a DETAIL line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The same refusal with a HINT line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Whether `code` is shaped like a SQLSTATE: five characters, each a digit or an upper-case ASCII
/// letter (PostgreSQL's alphabet for error codes).
pub fn is_valid_sqlstate(code: &str) -> bool {
    code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_builds_a_plain_denial() {
        let d = deny(sqlstate::READ_ONLY_SQL_TRANSACTION, "no writes");
        assert_eq!(d.sqlstate, "25006");
        assert_eq!(d.message, "no writes");
        assert_eq!(d.detail, None);
        assert_eq!(d.hint, None);
    }

    #[test]
    fn detail_and_hint() {
        let d = deny("42501", String::from("nope"))
            .with_detail("because")
            .with_hint("ask the DBA");
        assert_eq!(d.detail.as_deref(), Some("because"));
        assert_eq!(d.hint.as_deref(), Some("ask the DBA"));
    }

    #[test]
    fn sqlstate_shape() {
        for code in ["28000", "28P01", "XX000", "0A000", "25006"] {
            assert!(is_valid_sqlstate(code), "{code}");
        }
        for code in ["", "2800", "280000", "28p01", "28 00", "2800é"] {
            assert!(!is_valid_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn constants_are_valid() {
        for code in [
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            sqlstate::INVALID_PASSWORD,
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            sqlstate::FEATURE_NOT_SUPPORTED,
            sqlstate::TOO_MANY_CONNECTIONS,
            sqlstate::INTERNAL_ERROR,
        ] {
            assert!(is_valid_sqlstate(code), "{code}");
        }
    }
}
