//! Diagnostics: every problem found while loading is reported against the file, line and key
//! that caused it, so an operator can jump straight to the offending line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem (error or warning) found while loading the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in (an included file names itself, not the includer).
    pub file: PathBuf,
    /// 1-based line, when the problem belongs to a line.
    pub line: Option<u32>,
    /// The setting, database key or section the problem concerns.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Loading failed. Holds every error found (not just the first) so one edit-and-retry cycle
/// can fix them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_lines(.diagnostics))]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

fn render_lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Where a value came from. Cheap to clone; carried alongside every raw value so validation,
/// which runs after parsing, can still point at the right line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: PathBuf,
    pub line: Option<u32>,
    /// Position in reading order across all files (includes splice into their includer), so
    /// diagnostics found in different passes can be listed in the order a user reads them.
    pub seq: u64,
}

/// Reading-order base for files read after the configuration (the auth file).
pub(crate) const AFTER_CONFIG: u64 = 1 << 40;

impl Loc {
    /// A location in a single-file source: reading order is line order.
    pub fn new(file: &Path, line: Option<u32>) -> Self {
        Self::at(file, line, line.map_or(0, u64::from))
    }

    pub fn at(file: &Path, line: Option<u32>, seq: u64) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            seq,
        }
    }

    pub fn display(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// Collects errors and warnings while the front-ends and the validator run.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    error_seq: Vec<u64>,
    warning_seq: Vec<u64>,
}

impl Diags {
    pub fn error(&mut self, loc: &Loc, key: Option<&str>, message: impl Into<String>) {
        self.errors.push(make(loc, key, message.into()));
        self.error_seq.push(loc.seq);
    }

    pub fn warn(&mut self, loc: &Loc, key: Option<&str>, message: impl Into<String>) {
        self.warnings.push(make(loc, key, message.into()));
        self.warning_seq.push(loc.seq);
    }

    /// Errors and warnings in reading order. Syntax problems and validation problems are found
    /// in separate passes; this interleaves them back the way the user reads the files.
    pub fn into_sorted(self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        (
            sorted(self.errors, &self.error_seq),
            sorted(self.warnings, &self.warning_seq),
        )
    }
}

fn sorted(list: Vec<Diagnostic>, seq: &[u64]) -> Vec<Diagnostic> {
    let mut keyed: Vec<(u64, Diagnostic)> = seq.iter().copied().zip(list).collect();
    // Stable, so problems on the same line keep the order they were found in.
    keyed.sort_by_key(|(seq, _)| *seq);
    keyed.into_iter().map(|(_, d)| d).collect()
}

fn make(loc: &Loc, key: Option<&str>, message: String) -> Diagnostic {
    Diagnostic {
        file: loc.file.clone(),
        line: loc.line,
        key: key.map(str::to_owned),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_line_and_key() {
        let full = Diagnostic {
            file: PathBuf::from("a/b.ini"),
            line: Some(12),
            key: Some("listen_port".into()),
            message: "bad".into(),
        };
        assert_eq!(full.to_string(), "a/b.ini:12: listen_port: bad");
        let bare = Diagnostic {
            file: PathBuf::from("a/b.ini"),
            line: None,
            key: None,
            message: "bad".into(),
        };
        assert_eq!(bare.to_string(), "a/b.ini: bad");
    }

    #[test]
    fn sorting_follows_reading_order() {
        let mut d = Diags::default();
        let inc = Loc::at(Path::new("inc.ini"), Some(5), 3);
        let main1 = Loc::at(Path::new("main.ini"), Some(1), 1);
        let main3 = Loc::at(Path::new("main.ini"), Some(3), 9);
        let users = Loc::at(Path::new("users.txt"), Some(1), AFTER_CONFIG + 1);
        d.error(&users, None, "users");
        d.error(&main3, None, "main3");
        d.error(&inc, None, "inc");
        d.error(&main1, None, "main1");
        d.error(&inc, None, "inc again");
        let (errors, _) = d.into_sorted();
        let got: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(got, vec!["main1", "inc", "inc again", "main3", "users"]);
    }

    #[test]
    fn error_display_is_one_line_per_diagnostic() {
        let mut d = Diags::default();
        let loc = Loc::new(Path::new("x.ini"), Some(1));
        d.error(&loc, Some("a"), "one");
        d.error(&loc, None, "two");
        let err = ConfigError {
            diagnostics: d.errors,
        };
        assert_eq!(err.to_string(), "x.ini:1: a: one\nx.ini:1: two");
    }
}
