//! `log_stats`: every `stats_period`, one log line per plugin that was called in the period (the pools' lines
//! come with the admin console's SHOW STATS).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::plugin::PluginStats;
use crate::state::State;

/// A plugin's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub allows: u64,
    pub denials: u64,
    pub errors: u64,
    pub nanos: u64,
}

impl Counts {
    pub fn of(stats: &PluginStats) -> Self {
        Self {
            calls: stats.calls.load(Ordering::Relaxed),
            allows: stats.allows.load(Ordering::Relaxed),
            denials: stats.denials.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            nanos: stats.nanos.load(Ordering::Relaxed),
        }
    }
}

/// The stats line of a plugin whose counters went from `before` to `now` in `period`; `None` when it was not
/// called. Counts are over the period (errors are rare and must not round away), `call` is the average
/// time of one call.
pub fn plugin_line(name: &str, before: Counts, now: Counts, period: Duration) -> Option<String> {
    let calls = now.calls.saturating_sub(before.calls);
    let errors = now.errors.saturating_sub(before.errors);
    if calls == 0 && errors == 0 {
        return None;
    }
    let per_sec = (calls as f64 / period.as_secs_f64().max(0.001)).round();
    let nanos = now.nanos.saturating_sub(before.nanos);
    Some(format!(
        "stats: plugin {name}: {calls} calls ({per_sec}/s), {} allows, {} denials, {errors} errors, call {} us",
        now.allows.saturating_sub(before.allows),
        now.denials.saturating_sub(before.denials),
        nanos / calls.max(1) / 1000,
    ))
}

/// Logs the stats lines every `stats_period` (both settings are read anew each period: reloadable).
pub async fn log_periodically(state: Arc<State>) {
    let mut last: HashMap<usize, Counts> = HashMap::new();
    let mut since = Instant::now();
    loop {
        let period = state.runtime().config.settings.stats_period;
        tokio::time::sleep(period.max(Duration::from_secs(1))).await;
        let runtime = state.runtime();
        let elapsed = since.elapsed();
        since = Instant::now();
        let mut seen = HashMap::new();
        for plugin in runtime.plugins.all() {
            // Keyed by identity: a plugin replaced on reload starts from zero.
            let key = Arc::as_ptr(plugin) as usize;
            let now = Counts::of(&plugin.stats);
            let before = last.get(&key).copied().unwrap_or_default();
            if runtime.config.settings.log_stats
                && let Some(line) = plugin_line(plugin.name(), before, now, elapsed)
            {
                tracing::info!("{line}");
            }
            seen.insert(key, now);
        }
        last = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_period_with_rates_and_average_call_time() {
        let before = Counts {
            calls: 100,
            allows: 90,
            denials: 10,
            errors: 0,
            nanos: 1_000_000,
        };
        let now = Counts {
            calls: 700,
            allows: 660,
            denials: 30,
            errors: 10,
            nanos: 4_000_000,
        };
        assert_eq!(
            plugin_line("ro", before, now, Duration::from_secs(60)).as_deref(),
            Some(
                "stats: plugin ro: 600 calls (10/s), 570 allows, 20 denials, 10 errors, call 5 us"
            )
        );
        assert_eq!(plugin_line("ro", now, now, Duration::from_secs(60)), None);
        let fresh = Counts {
            calls: 2,
            allows: 2,
            nanos: 6000,
            ..Counts::default()
        };
        assert_eq!(
            plugin_line("ro", Counts::default(), fresh, Duration::from_secs(1)).as_deref(),
            Some("stats: plugin ro: 2 calls (2/s), 2 allows, 0 denials, 0 errors, call 3 us")
        );
    }
}
