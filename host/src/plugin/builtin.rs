//! Plugins shipped inside pgwarden, built from `plugins/` by the build script.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The component bytes of built-in plugin `name` (`readonly`, `router`, `auth-query`).
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The built-in plugin names.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}
