//! The intermediate form both front-ends (ini and TOML) produce. Validation only ever sees
//! this, so the two file formats cannot drift apart in meaning.

use std::path::{Path, PathBuf};

use super::diag::Loc;
use super::values::RawValue;

/// One `key = value`, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawItem {
    pub key: String,
    pub value: RawValue,
    pub loc: Loc,
}

/// One `[databases]` or `[users]` entry: a name plus its key/value pairs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEntry {
    pub name: String,
    pub loc: Loc,
    pub items: Vec<RawItem>,
}

/// Everything a configuration file said, untyped and in file order.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RawConfig {
    pub settings: Vec<RawItem>,
    pub databases: Vec<RawEntry>,
    pub users: Vec<RawEntry>,
    /// One entry per plugin (ini `plugin.NAME.KEY` in `[pgwarden]`, TOML `[plugins.NAME]`); keys of its
    /// own configuration table are prefixed `config.`.
    pub plugins: Vec<RawEntry>,
    /// Plugin runtime settings (`plugin_cache_dir` in ini, `[plugins] cache_dir` in TOML), as `cache_dir`.
    pub plugin_runtime: Vec<RawItem>,
}

/// Resolves a path written in a configuration file. PgBouncer takes relative paths from the
/// working directory, which breaks as soon as the daemon is started from elsewhere; we look
/// next to the file that mentions the path first and only fall back to the working directory
/// when nothing is there, so every configuration PgBouncer accepts still resolves the same.
pub(crate) fn resolve_relative(written_in: &Path, target: &Path) -> PathBuf {
    if target.is_absolute() {
        return target.to_path_buf();
    }
    match written_in.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            let beside = dir.join(target);
            if beside.exists() || !target.exists() {
                beside
            } else {
                target.to_path_buf()
            }
        }
        _ => target.to_path_buf(),
    }
}

/// 1-based line number of a byte offset, for turning TOML spans into diagnostics.
pub(crate) fn line_of(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    let newlines = text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    u32::try_from(newlines.saturating_add(1)).unwrap_or(u32::MAX)
}

/// 1-based line number from a 0-based index, saturating on absurdly long files.
pub(crate) fn line_number(index: usize) -> u32 {
    u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX)
}

/// Every string of up to `max_len` characters from `alphabet`, for exhaustive no-panic tests
/// of the hand-written scanners.
#[cfg(test)]
pub(crate) fn all_strings(alphabet: &[char], max_len: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..max_len {
        let mut next = Vec::new();
        for prefix in &frontier {
            for &c in alphabet {
                let mut s = prefix.clone();
                s.push(c);
                next.push(s);
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_counts_newlines_before_offset() {
        let text = "a\nbb\nccc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 999), 3);
    }

    #[test]
    fn absolute_paths_are_kept() {
        let p = Path::new("/etc/x.txt");
        assert_eq!(resolve_relative(Path::new("/a/b.ini"), p), p);
    }

    #[test]
    fn relative_paths_prefer_the_including_directory() {
        let dir = std::env::temp_dir().join(format!("pgw-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("inc.ini"), "").expect("write");
        let main = dir.join("main.ini");
        assert_eq!(
            resolve_relative(&main, Path::new("inc.ini")),
            dir.join("inc.ini")
        );
        // Missing everywhere: report the path beside the including file.
        assert_eq!(
            resolve_relative(&main, Path::new("nope.ini")),
            dir.join("nope.ini")
        );
        // A bare file name has no directory: the working directory it is.
        assert_eq!(
            resolve_relative(Path::new("main.ini"), Path::new("x")),
            Path::new("x")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
