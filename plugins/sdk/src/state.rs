//! Keeping what `init` parsed for the hook calls that follow.

use std::sync::{Arc, Mutex, PoisonError};

/// A slot for a plugin's parsed settings, usable as a `static`.
///
/// pgwarden calls `init` once per load, before any hook, on the same instance; hooks then read the
/// settings. A `static` is the only place a component can keep them between calls. Readers get an
/// `Arc`, so a hook never holds the lock while it works. Plugins abort on panic, so the lock can
/// never be poisoned in practice; a poisoned one is used anyway rather than trapping.
#[derive(Debug)]
pub struct State<T> {
    slot: Mutex<Option<Arc<T>>>,
}

impl<T> State<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    /// Stores `value`, replacing what was there.
    pub fn set(&self, value: T) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(value));
    }

    /// The stored value, or `None` before `set` (a hook called before a successful `init`).
    pub fn get(&self) -> Option<Arc<T>> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Empties the slot (e.g. when a new `init` fails half-way).
    pub fn clear(&self) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl<T> Default for State<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear() {
        static SLOT: State<String> = State::new();
        assert!(SLOT.get().is_none());
        SLOT.set("a".to_string());
        assert_eq!(SLOT.get().as_deref().map(String::as_str), Some("a"));
        SLOT.set("b".to_string());
        assert_eq!(SLOT.get().as_deref().map(String::as_str), Some("b"));
        SLOT.clear();
        assert!(SLOT.get().is_none());
        assert!(State::<u8>::default().get().is_none());
    }
}
