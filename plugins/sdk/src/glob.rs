//! Shell-style wildcard matching for configuration values: `*` matches any run of characters
//! (including none), `?` exactly one character; everything else matches itself, case-sensitively
//! (PostgreSQL user and database names are case-sensitive once the client has sent them).
//! There is no escape: names containing `*` or `?` are matched by those wildcards.

/// Whether `text` matches `pattern` as a whole.
///
/// Runs in O(pattern × text) at worst (the classic backtrack-to-last-star method), so a hostile
/// pattern or name cannot make it explode.
pub fn matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    // Where the last `*` was in the pattern, and the text position it is currently standing for.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry after it.
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether `pattern` contains a wildcard (so it is not a plain name).
pub fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal() {
        assert!(matches("alice", "alice"));
        assert!(!matches("alice", "Alice"));
        assert!(!matches("alice", "alic"));
        assert!(!matches("alice", "alicee"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn star() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("app_*", "app_"));
        assert!(matches("app_*", "app_reports"));
        assert!(!matches("app_*", "ap_reports"));
        assert!(matches("*_ro", "analytics_ro"));
        assert!(!matches("*_ro", "analytics_rw"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(matches("a*b*c", "abc"));
        assert!(!matches("a*b*c", "acb"));
        assert!(matches("**", "x"));
        assert!(matches("a*a*a", "aaaa"));
        assert!(matches("rule.*", "rule."));
        assert!(matches("database.*.auth_user", "database.my.db.auth_user"));
    }

    #[test]
    fn question_mark() {
        assert!(matches("db?", "db1"));
        assert!(!matches("db?", "db"));
        assert!(!matches("db?", "db12"));
        assert!(matches("?*", "x"));
        assert!(!matches("?*", ""));
        assert!(matches("h?llo", "héllo"));
    }

    #[test]
    fn pathological_input_is_fast() {
        let text = "a".repeat(2_000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!matches(&pattern, &text));
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcard("a*"));
        assert!(has_wildcard("a?"));
        assert!(!has_wildcard("abc"));
    }
}
