//! A value that one writer replaces while many readers keep using the version they loaded.
//!
//! Authentication settings read from the management cluster (front-proxy CA and header names,
//! client CA) change while the server runs. A request loads the current version once and uses
//! it to the end, so it never sees half of an old and half of a new configuration; the refresher
//! stores a complete new version in one step.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, Weak};

/// A shared, atomically replaceable `Arc<T>`. Clones share the value.
pub struct Swap<T> {
    current: Arc<RwLock<Arc<T>>>,
}

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Swap {
            current: self.current.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Swap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.load().fmt(f)
    }
}

impl<T> Swap<T> {
    pub fn new(value: T) -> Self {
        Swap {
            current: Arc::new(RwLock::new(Arc::new(value))),
        }
    }

    /// The current version; it stays valid (and unchanged) however often the value is replaced.
    pub fn load(&self) -> Arc<T> {
        // The lock guards a pointer swap only, so a panic while holding it cannot leave a
        // half-written value behind: poisoning carries no information here.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the value for every later [`Self::load`].
    pub fn store(&self, value: T) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }

    /// A handle that does not keep the value alive, for background refreshers that should stop
    /// once every user is gone.
    pub(crate) fn downgrade(&self) -> WeakSwap<T> {
        WeakSwap {
            current: Arc::downgrade(&self.current),
        }
    }
}

/// See [`Swap::downgrade`].
pub(crate) struct WeakSwap<T> {
    current: Weak<RwLock<Arc<T>>>,
}

impl<T> WeakSwap<T> {
    pub(crate) fn upgrade(&self) -> Option<Swap<T>> {
        self.current.upgrade().map(|current| Swap { current })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_their_version_and_weak_handles_die_with_the_value() {
        let swap = Swap::new(1);
        let before = swap.load();
        swap.clone().store(2);
        assert_eq!((*before, *swap.load()), (1, 2));

        let weak = swap.downgrade();
        assert!(weak.upgrade().is_some());
        drop(swap);
        assert!(weak.upgrade().is_none());
    }
}
