//! What the plugin knows about functions and words on its own, to decide whether a statement
//! pgwarden reads as "not read-only" is so only because of functions the operator allowed.

/// Functions known not to write anything or change what the session may write: built-in
/// aggregates, window, scalar, JSON and array functions, and SQL keywords that a lexer may take for
/// a function because a `(` follows them (`EXISTS (`, `IN (`, `CAST (`). Names as pgwarden reports
/// them: lower-case, without a `pg_catalog.` prefix (stripped before lookup).
///
/// Being absent from this list is never a reason to allow anything: an unknown function keeps a
/// flagged statement denied unless the operator lists it in `allow_functions`.
#[rustfmt::skip]
const HARMLESS: &[&str] = &[
    // Keywords a `(` may follow.
    "all", "and", "any", "array", "as", "case", "cast", "cube", "exists", "filter", "grouping",
    "in", "lateral", "not", "on", "or", "over", "rollup", "row", "sets", "some", "using", "values",
    "within",
    // Aggregates and window functions.
    "array_agg", "avg", "bit_and", "bit_or", "bool_and", "bool_or", "count", "dense_rank",
    "every", "first_value", "json_agg", "json_object_agg", "jsonb_agg", "jsonb_object_agg", "lag",
    "last_value", "lead", "max", "min", "mode", "nth_value", "ntile", "percent_rank",
    "percentile_cont", "percentile_disc", "rank", "row_number", "stddev", "stddev_pop",
    "stddev_samp", "string_agg", "sum", "var_pop", "var_samp", "variance",
    // Conditionals.
    "coalesce", "greatest", "least", "nullif",
    // Strings.
    "btrim", "char_length", "character_length", "concat", "concat_ws", "decode", "encode",
    "format", "initcap", "left", "length", "lower", "lpad", "ltrim", "md5", "octet_length",
    "overlay", "position", "quote_ident", "quote_literal", "quote_nullable", "regexp_match",
    "regexp_matches", "regexp_replace", "regexp_split_to_array", "repeat", "replace", "reverse",
    "right", "rpad", "rtrim", "split_part", "starts_with", "string_to_array", "strpos", "substr",
    "substring", "to_char", "to_hex", "to_number", "translate", "trim", "upper",
    // Numbers.
    "abs", "cbrt", "ceil", "ceiling", "div", "exp", "floor", "ln", "log", "log10", "mod", "pi",
    "power", "random", "round", "sign", "sqrt", "trunc", "width_bucket",
    // Dates and times.
    "age", "clock_timestamp", "date_bin", "date_part", "date_trunc", "extract", "isfinite",
    "justify_days", "justify_hours", "justify_interval", "make_date", "make_interval",
    "make_time", "make_timestamp", "make_timestamptz", "now", "statement_timestamp", "timeofday",
    "timezone", "to_date", "to_timestamp", "transaction_timestamp",
    // JSON.
    "json_array_elements", "json_array_elements_text", "json_array_length", "json_build_array",
    "json_build_object", "json_each", "json_each_text", "json_extract_path",
    "json_extract_path_text", "json_object", "json_object_keys", "json_typeof",
    "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length",
    "jsonb_build_array", "jsonb_build_object", "jsonb_each", "jsonb_each_text",
    "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert", "jsonb_object",
    "jsonb_object_keys", "jsonb_path_exists", "jsonb_path_query", "jsonb_pretty", "jsonb_set",
    "jsonb_strip_nulls", "jsonb_typeof", "row_to_json", "to_json", "to_jsonb",
    // Arrays and sets.
    "array_append", "array_cat", "array_dims", "array_length", "array_lower", "array_position",
    "array_positions", "array_prepend", "array_remove", "array_replace", "array_to_string",
    "array_upper", "cardinality", "generate_series", "generate_subscripts", "unnest",
    // Session information.
    "current_database", "current_schema", "current_schemas", "current_setting",
    "has_database_privilege", "has_schema_privilege", "has_table_privilege", "inet_client_addr",
    "inet_server_addr", "pg_backend_pid", "pg_is_in_recovery", "pg_postmaster_start_time",
    "pg_typeof", "version",
];

/// Words that make a query write or lock even when every function in it is harmless: data-changing
/// CTEs (`WITH ... INSERT`), `SELECT ... INTO`, locking clauses (`FOR UPDATE`, `FOR SHARE`),
/// `EXPLAIN ANALYZE` of a write, and any command keyword that has no business in a plain query.
/// A column that happens to carry one of these names unquoted only costs the exemption.
#[rustfmt::skip]
const WRITING_WORDS: &[&str] = &[
    "ALTER", "ANALYZE", "CALL", "CHECKPOINT", "CLUSTER", "COMMENT", "COPY", "CREATE", "DELETE",
    "DISCARD", "DO", "DROP", "EXECUTE", "GRANT", "IMPORT", "INSERT", "INTO", "LISTEN", "LOAD",
    "LOCK", "MERGE", "NOTIFY", "PREPARE", "REFRESH", "REINDEX", "RESET", "REVOKE", "SECURITY",
    "SET", "SHARE", "TRUNCATE", "UNLISTEN", "UPDATE", "VACUUM",
];

/// `name` as compared with the lists and with `allow_functions`: trimmed, lower-case, without a
/// leading `pg_catalog.` (the same function however it is written; other schemas stay distinct).
pub fn normalize_function(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.strip_prefix("pg_catalog.") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// Whether the (normalized) function is known not to write.
pub fn is_harmless_function(name: &str) -> bool {
    HARMLESS.contains(&name)
}

/// Whether the (upper-case) word can make a query write or lock.
pub fn is_writing_word(word: &str) -> bool {
    WRITING_WORDS.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize_function(" NextVal "), "nextval");
        assert_eq!(normalize_function("pg_catalog.nextval"), "nextval");
        assert_eq!(normalize_function("PG_CATALOG.setval"), "setval");
        assert_eq!(normalize_function("myschema.nextval"), "myschema.nextval");
    }

    #[test]
    fn side_effect_functions_are_not_harmless() {
        for name in [
            "nextval",
            "setval",
            "set_config",
            "pg_advisory_lock",
            "lo_import",
            "lo_unlink",
            "pg_terminate_backend",
            "pg_cancel_backend",
            "dblink_exec",
            "pg_reload_conf",
            "txid_current",
            "pg_notify",
            "setseed",
        ] {
            assert!(!is_harmless_function(name), "{name}");
        }
        assert!(is_harmless_function("count"));
        assert!(is_harmless_function("exists"));
    }

    #[test]
    fn writing_words() {
        for word in [
            "INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "SHARE", "ANALYZE",
        ] {
            assert!(is_writing_word(word), "{word}");
        }
        for word in ["SELECT", "FROM", "WHERE", "NEXTVAL", "UPDATED_AT"] {
            assert!(!is_writing_word(word), "{word}");
        }
    }
}
