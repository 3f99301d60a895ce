//! Host data into the WIT records plugins see, and their answers back into host terms.

use std::sync::Arc;

use super::bindings::exports::pgwarden::plugin::policy;
use super::bindings::pgwarden::plugin::{handles, types};
use crate::config::PoolMode;
use crate::net::Peer;
use crate::protocol::startup::StartupMessage;
use crate::sql::{self, StatementKind};

/// What a hook is told about a client. Built once per client and kept up to date, so a policy check
/// does not rebuild it.
pub type SessionInfo = types::SessionInfo;

pub fn session_info<'a>(
    user: &str,
    database: &str,
    application_name: &str,
    peer: Peer,
    startup: impl IntoIterator<Item = (&'a str, &'a str)>,
    mode: PoolMode,
) -> SessionInfo {
    let (client_address, client_ip) = match peer {
        Peer::Tcp(addr) => (addr.to_string(), addr.ip().to_string()),
        Peer::Unix => ("unix".to_owned(), String::new()),
        Peer::Unknown => ("unknown".to_owned(), String::new()),
    };
    SessionInfo {
        user: user.to_owned(),
        database: database.to_owned(),
        application_name: application_name.to_owned(),
        client_address,
        client_ip,
        tls: false,
        startup_parameters: startup
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        pool_mode: pool_mode(mode),
        in_transaction: false,
    }
}

/// What a session's record for policy plugins is made from, kept until a check first needs the record (most
/// sessions never do: no policy plugin applies to them): the database the client asked for and its startup
/// parameters, in one allocation, shared by logins in a row that bring the same ([`LoginFacts::share`]).
/// PostgreSQL's startup strings hold no NUL, so NUL separates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFacts(Arc<str>);

impl LoginFacts {
    /// The facts of a login to `database` with this startup packet: its parameters are kept as the message
    /// packs them, after the database name.
    pub fn new(database: &str, startup: &StartupMessage) -> Self {
        let packed = startup.packed_params();
        Self(crate::params::shared_str(|s| {
            s.push_str(database);
            if !packed.is_empty() {
                s.push('\0');
                s.push_str(packed);
            }
        }))
    }

    /// Shares `last`'s copy when it holds the same facts, or becomes `last` (see
    /// [`crate::params::ParamValues::share`]).
    pub fn share(&mut self, last: &mut Option<Self>) {
        match last {
            Some(l) if *l == *self => self.0 = Arc::clone(&l.0),
            _ => *last = Some(self.clone()),
        }
    }

    /// The record [`session_info`] makes from these facts and the rest of what it needs.
    pub fn session_info(
        &self,
        user: &str,
        application_name: &str,
        peer: Peer,
        mode: PoolMode,
    ) -> SessionInfo {
        let (database, packed) = self.0.split_once('\0').unwrap_or((&self.0, ""));
        let startup = crate::protocol::startup::packed_pairs(packed);
        session_info(user, database, application_name, peer, startup, mode)
    }
}

/// A session record with nothing in it: what a check's session is replaced with while a plugin call holds
/// it (built without allocating).
pub fn empty_session_info() -> SessionInfo {
    SessionInfo {
        user: String::new(),
        database: String::new(),
        application_name: String::new(),
        client_address: String::new(),
        client_ip: String::new(),
        tls: false,
        startup_parameters: Vec::new(),
        pool_mode: types::PoolMode::Session,
        in_transaction: false,
    }
}

pub fn pool_mode(mode: PoolMode) -> types::PoolMode {
    match mode {
        PoolMode::Session => types::PoolMode::Session,
        PoolMode::Transaction => types::PoolMode::Transaction,
        PoolMode::Statement => types::PoolMode::Statement,
    }
}

pub fn from_pool_mode(mode: types::PoolMode) -> PoolMode {
    match mode {
        types::PoolMode::Session => PoolMode::Session,
        types::PoolMode::Transaction => PoolMode::Transaction,
        types::PoolMode::Statement => PoolMode::Statement,
    }
}

/// One query to check, as the relay has it. The `policy` record is built from it only for plugins that
/// export `policy`; `query-policy` plugins read it through handles.
#[derive(Debug, Clone, Copy)]
pub struct QueryInput<'a> {
    pub sql: &'a str,
    /// A Parse message (extended protocol) rather than a Query message.
    pub extended: bool,
    /// For a Parse message, the prepared statement's name.
    pub statement_name: &'a str,
    /// The client's `standard_conforming_strings`, for the lexer.
    pub standard_strings: bool,
}

/// The `policy` record of a query, with pgwarden's summary of each statement.
pub fn query(q: &QueryInput<'_>) -> policy::Query {
    policy::Query {
        sql: q.sql.to_owned(),
        protocol: if q.extended {
            policy::Protocol::Extended
        } else {
            policy::Protocol::Simple
        },
        statement_name: q.statement_name.to_owned(),
        statements: sql::summarize_with(q.sql, q.standard_strings)
            .into_iter()
            .map(statement)
            .collect(),
    }
}

fn statement(s: sql::Statement) -> policy::Statement {
    policy::Statement {
        text: s.text,
        command: s.command,
        kind: match s.kind {
            StatementKind::Query => policy::StatementKind::Query,
            StatementKind::DataChange => policy::StatementKind::DataChange,
            StatementKind::SchemaChange => policy::StatementKind::SchemaChange,
            StatementKind::TransactionControl => policy::StatementKind::TransactionControl,
            StatementKind::Session => policy::StatementKind::Session,
            StatementKind::Other => policy::StatementKind::Other,
        },
        words: s.words,
        functions: s.functions,
        read_only: s.read_only,
    }
}

/// A statement as `handles.query.statements` returns it.
pub fn handle_statement(s: &sql::Statement) -> handles::Statement {
    handles::Statement {
        text: s.text.clone(),
        command: s.command.clone(),
        kind: match s.kind {
            StatementKind::Query => handles::StatementKind::Query,
            StatementKind::DataChange => handles::StatementKind::DataChange,
            StatementKind::SchemaChange => handles::StatementKind::SchemaChange,
            StatementKind::TransactionControl => handles::StatementKind::TransactionControl,
            StatementKind::Session => handles::StatementKind::Session,
            StatementKind::Other => handles::StatementKind::Other,
        },
        words: s.words.clone(),
        functions: s.functions.clone(),
        read_only: s.read_only,
    }
}

/// A SQLSTATE a plugin gave, checked: five characters of digits and upper-case letters. Anything else
/// becomes `fallback`, so a careless plugin cannot send clients a malformed error.
pub fn sqlstate(code: &str, fallback: &'static str) -> String {
    let ok = code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if ok {
        code.to_owned()
    } else {
        fallback.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_checked() {
        assert_eq!(sqlstate("25006", "XX000"), "25006");
        assert_eq!(sqlstate("P0001", "XX000"), "P0001");
        assert_eq!(sqlstate("2500", "XX000"), "XX000");
        assert_eq!(sqlstate("25006\0", "XX000"), "XX000");
        assert_eq!(sqlstate("abcde", "XX000"), "XX000");
    }

    #[test]
    fn login_facts_make_the_same_record() {
        let peer = Peer::Tcp("10.1.2.3:5555".parse().unwrap());
        let startup = [("user", "u"), ("options", ""), ("application_name", "a b")];
        for params in [&startup[..], &[]] {
            let direct = session_info(
                "u",
                "db",
                "app",
                peer,
                params.iter().copied(),
                PoolMode::Statement,
            );
            let msg = StartupMessage::new(0, params.iter().copied());
            let facts =
                LoginFacts::new("db", &msg).session_info("u", "app", peer, PoolMode::Statement);
            // The record has no PartialEq (generated); its Debug shows every field.
            assert_eq!(format!("{facts:?}"), format!("{direct:?}"));
        }
    }

    #[test]
    fn logins_with_the_same_facts_share_one_copy() {
        let startup = StartupMessage::new(0, [("user", "u")]);
        let mut last = None;
        let mut a = LoginFacts::new("db", &startup);
        a.share(&mut last);
        let mut b = LoginFacts::new("db", &startup);
        b.share(&mut last);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let mut c = LoginFacts::new("other", &startup);
        c.share(&mut last);
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert_eq!(last, Some(c), "the latest facts are the ones shared next");
    }

    #[test]
    fn session_info_from_peer() {
        let peer = Peer::Tcp("10.1.2.3:5555".parse().unwrap());
        let s = session_info("u", "d", "app", peer, [("user", "u")], PoolMode::Session);
        assert_eq!(
            (s.client_address.as_str(), s.client_ip.as_str()),
            ("10.1.2.3:5555", "10.1.2.3")
        );
        assert_eq!(s.pool_mode, types::PoolMode::Session);
        let s = session_info("u", "d", "", Peer::Unix, [], PoolMode::Transaction);
        assert_eq!(
            (s.client_address.as_str(), s.client_ip.as_str()),
            ("unix", "")
        );
    }
}
