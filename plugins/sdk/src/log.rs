//! Writing to pgwarden's log through the imported `log` interface.
//!
//! pgwarden tags each line with the plugin's name and applies its own log level, so plugins log
//! freely at `Debug`/`Trace` without checking a level first. Outside wasm32 (a plugin's native unit
//! tests) there is no host to import from: lines go to stderr instead, so code under test may log.

pub use crate::bindings::base::pgwarden::plugin::log::Level;

/// Logs `message` at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::base::pgwarden::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin {level:?}] {message}");
}

/// Logs a formatted line: `log!(Info, "routed {} to {}", user, alias)`. The first argument is a
/// [`Level`] variant name: `Error`, `Warn`, `Info`, `Debug` or `Trace`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_natively_does_not_need_a_host() {
        log(Level::Info, "plain");
        crate::log!(Debug, "formatted {} {}", 1, "two");
        crate::log!(Trace, "no args");
    }
}
