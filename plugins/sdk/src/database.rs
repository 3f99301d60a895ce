//! Running queries through pgwarden (the `database` import, for auth plugins).
//!
//! Plugins call queries through the [`Database`] trait rather than the raw import so that their
//! logic can be unit-tested natively against a fake; inside pgwarden they pass [`HostDatabase`].

/// One result row: a text value per column, `None` for NULL.
pub type Row = Vec<Option<String>>;

/// Something that runs a parameterised query and returns its rows or an error message.
pub trait Database {
    /// Runs `sql` with `$1`, `$2`, … bound to `params` on PostgreSQL database `database`, logged in
    /// as `user`; the rows, or the server's (or pgwarden's) error message.
    fn query(
        &self,
        user: &str,
        database: &str,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Row>, String>;
}

/// The real thing: pgwarden's `database` import. `user` must have a secret in pgwarden's
/// `auth_file`; the query runs through pgwarden's own pools.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostDatabase;

impl Database for HostDatabase {
    fn query(
        &self,
        user: &str,
        database: &str,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Row>, String> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::auth::pgwarden::plugin::database::query(user, database, sql, params)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (user, database, sql, params);
            Err("the database import exists only inside pgwarden (wasm32)".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_database_refuses_natively() {
        let err = HostDatabase.query("u", "d", "SELECT 1", &[]).unwrap_err();
        assert!(err.contains("only inside pgwarden"), "{err}");
    }
}
