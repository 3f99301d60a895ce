//! The queries the policy benchmarks check. Both SELECTs are read-only by pgwarden's reading, so the
//! `readonly` plugin allows them: the benches measure the common path (a test below holds them to it).

use std::fmt::Write as _;

/// A ~100-byte single-row lookup, as an ORM sends it.
pub const SMALL_SELECT: &str =
    "SELECT id, name, email, created_at FROM customers WHERE id = $1 AND status = 'active' LIMIT 1";

/// A write, which the `readonly` plugin denies.
pub const SMALL_INSERT: &str =
    "INSERT INTO audit_log (customer_id, action, created_at) VALUES ($1, 'login', now())";

/// A ~10 KB reporting query: 120 computed columns over a join, filtered by a list of 600 ids (about
/// 850 words and 120 function calls for the summary to collect).
pub fn large_select() -> String {
    let mut sql = String::from("SELECT c.id, c.name");
    for i in 0..120 {
        let _ = write!(sql, ", coalesce(o.amount_{i}, 0) AS amount_{i}");
    }
    sql.push_str(
        " FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.created_at >= '2025-01-01' AND o.customer_id IN (",
    );
    for i in 0..600 {
        let _ = write!(sql, "{}{}", if i == 0 { "" } else { ", " }, 100_000 + i * 7);
    }
    sql.push_str(") ORDER BY c.id");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_as_advertised() {
        assert!(
            (90..=110).contains(&SMALL_SELECT.len()),
            "{}",
            SMALL_SELECT.len()
        );
        let large = large_select();
        assert!((9_500..=10_500).contains(&large.len()), "{}", large.len());
    }

    #[test]
    fn selects_read_only_and_insert_not() {
        for sql in [SMALL_SELECT.to_owned(), large_select()] {
            let summary = pgwarden::sql::summarize(&sql);
            assert_eq!(summary.len(), 1);
            assert!(summary[0].read_only, "{}", &sql[..60]);
        }
        let insert = pgwarden::sql::summarize(SMALL_INSERT);
        assert!(!insert[0].read_only);
    }
}
