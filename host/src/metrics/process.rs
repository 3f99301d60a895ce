//! The standard `process_*` metrics every Prometheus exporter has, read from `/proc/self` at scrape time
//! (nothing is counted while serving). Absent where there is no `/proc`.

use super::exposition::{Exposition, Kind};

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux reports them in USER_HZ, which is 100 on
/// every architecture it exposes to user space.
const USER_HZ: f64 = 100.0;

/// Writes the process families it can read.
pub fn write(e: &mut Exposition) {
    if let Some(stat) = read("/proc/self/stat").as_deref().and_then(Stat::parse) {
        e.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU time spent, in seconds.",
        );
        e.sample(
            "process_cpu_seconds_total",
            &[],
            (stat.utime + stat.stime) as f64 / USER_HZ,
        );
        let boot = read("/proc/stat").as_deref().and_then(boot_time);
        if let Some(boot) = boot {
            e.family(
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since the Unix epoch, in seconds.",
            );
            e.sample(
                "process_start_time_seconds",
                &[],
                boot as f64 + stat.starttime as f64 / USER_HZ,
            );
        }
    }
    if let Some(status) = read("/proc/self/status") {
        for (field, name, help) in [
            (
                "VmRSS:",
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            (
                "VmSize:",
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
        ] {
            if let Some(kib) = status_kib(&status, field) {
                e.family(name, Kind::Gauge, help);
                e.sample(name, &[], kib * 1024);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        e.family(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
        );
        e.sample("process_open_fds", &[], dir.count() as u64);
    }
    if let Some(max) = read("/proc/self/limits")
        .as_deref()
        .and_then(max_open_files)
    {
        e.family(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
        );
        e.sample("process_max_fds", &[], max);
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The fields of `/proc/self/stat` used here (in clock ticks).
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

impl Stat {
    fn parse(text: &str) -> Option<Self> {
        // `pid (comm) state ...`: comm may hold spaces and parentheses, so count fields after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field 3 (state) is fields[0]; utime is field 14, stime 15, starttime 22.
        let get = |n: usize| fields.get(n - 3)?.parse().ok();
        Some(Self {
            utime: get(14)?,
            stime: get(15)?,
            starttime: get(22)?,
        })
    }
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (pg warden) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 9 0 777 \
                    123456 789 18446744073709551615";
        assert_eq!(
            Stat::parse(stat),
            Some(Stat {
                utime: 250,
                stime: 50,
                starttime: 777
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            status_kib("Name:\tpgwarden\nVmRSS:\t   10240 kB\n", "VmRSS:"),
            Some(10240)
        );
        assert_eq!(
            max_open_files(
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
    }

    #[test]
    fn this_process_reports_itself() {
        let mut e = Exposition::default();
        write(&mut e);
        let text = e.finish();
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
            }
        }
    }
}
