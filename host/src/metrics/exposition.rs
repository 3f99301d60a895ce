//! Prometheus' text exposition format, version 0.0.4: per family a `# HELP` and a `# TYPE` line, then its
//! samples, one a line, `name{label="value",...} value`.

use std::fmt::Write as _;

use super::histogram::{BOUNDS_US, BUCKETS};

/// The Content-Type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Labels of one sample: (name, value) pairs, names fixed by the code, values escaped on output.
pub type Labels<'a> = [(&'a str, &'a str)];

/// A sample value: integers print exactly, floats as Prometheus reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Int(u64::from(v))
    }
}

/// The text being built.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family. Its samples must follow before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family (`name` may carry a suffix such as `_bucket`).
    pub fn sample(&mut self, name: &str, labels: &Labels<'_>, value: impl Into<Value>) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.value(value.into());
        self.out.push('\n');
    }

    /// A histogram's samples from its bucket counts (not cumulative, `+Inf` last) and the sum of its
    /// observations in seconds.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &Labels<'_>,
        counts: &[u64; BUCKETS],
        sum_seconds: f64,
    ) {
        let mut cumulative = 0u64;
        for (i, n) in counts.iter().enumerate() {
            cumulative += n;
            let le = match BOUNDS_US.get(i) {
                Some(&us) => format_float(us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.sample(&format!("{name}_sum"), labels, sum_seconds);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &Labels<'_>, le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (name, value) in labels.iter().copied().chain(le.map(|v| ("le", v))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(name);
            self.out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn value(&mut self, v: Value) {
        match v {
            Value::Int(n) => {
                let _ = write!(self.out, "{n}");
            }
            Value::Float(f) => self.out.push_str(&format_float(f)),
        }
    }
}

/// A float as the format writes it: `+Inf`, `-Inf`, `NaN`, else the shortest decimal that reads back the
/// same (never an exponent from Rust's `Display`, which Prometheus would accept too).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut e = Exposition::default();
        e.family(
            "pgwarden_x_total",
            Kind::Counter,
            "A back\\slash\nand a line.",
        );
        e.sample("pgwarden_x_total", &[], 3u64);
        e.sample(
            "pgwarden_x_total",
            &[("database", "d\"b\\\n"), ("user", "u")],
            0.25,
        );
        e.family("pgwarden_g", Kind::Gauge, "G.");
        e.sample("pgwarden_g", &[("a", "")], true);
        e.sample("pgwarden_g", &[], f64::INFINITY);
        e.sample("pgwarden_g", &[], f64::NAN);
        assert_eq!(
            e.finish(),
            "# HELP pgwarden_x_total A back\\\\slash\\nand a line.\n\
             # TYPE pgwarden_x_total counter\n\
             pgwarden_x_total 3\n\
             pgwarden_x_total{database=\"d\\\"b\\\\\\n\",user=\"u\"} 0.25\n\
             # HELP pgwarden_g G.\n\
             # TYPE pgwarden_g gauge\n\
             pgwarden_g{a=\"\"} 1\n\
             pgwarden_g +Inf\n\
             pgwarden_g NaN\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_is_their_total() {
        let mut counts = [0u64; BUCKETS];
        counts[0] = 2;
        counts[3] = 1;
        counts[BUCKETS - 1] = 4;
        let mut e = Exposition::default();
        e.family("h_seconds", Kind::Histogram, "H.");
        e.histogram("h_seconds", &[("database", "d")], &counts, 1.5);
        let text = e.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "h_seconds_bucket{database=\"d\",le=\"0.0001\"} 2");
        assert_eq!(
            lines[3],
            "h_seconds_bucket{database=\"d\",le=\"0.00025\"} 2"
        );
        assert_eq!(lines[5], "h_seconds_bucket{database=\"d\",le=\"0.001\"} 3");
        assert_eq!(lines[14], "h_seconds_bucket{database=\"d\",le=\"1\"} 3");
        assert_eq!(lines[18], "h_seconds_bucket{database=\"d\",le=\"30\"} 3");
        assert_eq!(lines[19], "h_seconds_bucket{database=\"d\",le=\"+Inf\"} 7");
        assert_eq!(lines[20], "h_seconds_sum{database=\"d\"} 1.5");
        assert_eq!(lines[21], "h_seconds_count{database=\"d\"} 7");
        assert_eq!(lines.len(), 22);
    }

    #[test]
    fn floats() {
        assert_eq!(format_float(0.0), "0");
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(1e-7), "0.0000001");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
    }
}
