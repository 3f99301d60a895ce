//! `log_stats`: every `stats_period`, PgBouncer's totals line (rates over the period, all pools) and one line
//! per plugin that was called in the period.

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

/// The pools' totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub transactions: u64,
    pub queries: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
}

impl Totals {
    pub fn of(state: &State) -> Self {
        let mut t = Self::default();
        for pool in state.pools.all() {
            let s = &pool.stats;
            t.transactions += s.transactions.load(Ordering::Relaxed);
            t.queries += s.queries.load(Ordering::Relaxed);
            t.client_parses += s.client_parses.load(Ordering::Relaxed);
            t.server_parses += s.server_parses.load(Ordering::Relaxed);
            t.binds += s.binds.load(Ordering::Relaxed);
        }
        t
    }
}

/// PgBouncer's stats line (its first five rates): per second over the period.
pub fn totals_line(before: Totals, now: Totals, period: Duration) -> String {
    let secs = period.as_secs_f64().max(0.001);
    let rate = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs).round() as u64;
    format!(
        "stats: {} xacts/s, {} queries/s, {} client parses/s, {} server parses/s, {} binds/s",
        rate(before.transactions, now.transactions),
        rate(before.queries, now.queries),
        rate(before.client_parses, now.client_parses),
        rate(before.server_parses, now.server_parses),
        rate(before.binds, now.binds),
    )
}

/// Logs the stats lines every `stats_period` (both settings are read anew each period: reloadable).
pub async fn log_periodically(state: Arc<State>) {
    let mut last: HashMap<usize, Counts> = HashMap::new();
    let mut last_totals = Totals::of(&state);
    let mut since = Instant::now();
    loop {
        let period = state.runtime().config.settings.stats_period;
        tokio::time::sleep(period.max(Duration::from_secs(1))).await;
        let runtime = state.runtime();
        let elapsed = since.elapsed();
        since = Instant::now();
        let totals = Totals::of(&state);
        crate::admin::rotate_window(&state);
        if runtime.config.settings.log_stats {
            tracing::info!("{}", totals_line(last_totals, totals, elapsed));
        }
        last_totals = totals;
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
    fn totals_line_has_pgbouncers_rates() {
        let before = Totals {
            transactions: 10,
            queries: 20,
            ..Totals::default()
        };
        let now = Totals {
            transactions: 130,
            queries: 260,
            client_parses: 6,
            server_parses: 2,
            binds: 60,
        };
        assert_eq!(
            totals_line(before, now, Duration::from_secs(60)),
            "stats: 2 xacts/s, 4 queries/s, 0 client parses/s, 0 server parses/s, 1 binds/s"
        );
    }

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
