//! One shared copy of strings that many entries repeat.
//!
//! A fleet of a hundred thousand devices carries a handful of run ids, units
//! and sites. The per-device state of the rules, the delivery audit and the
//! console keeps those strings as `Arc<str>` from one [`Interner`], so each
//! costs a pointer per device rather than an allocation per device.

use std::collections::HashSet;
use std::sync::Arc;

/// The strings seen, each held once.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Interner::default()
    }

    /// The shared copy of `text`, made on first sight.
    pub fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(text) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(Arc::clone(&shared));
        shared
    }

    /// Drops the copies nothing else holds any more.
    pub fn drop_unused(&mut self) {
        self.strings.retain(|shared| Arc::strong_count(shared) > 1);
    }

    /// Strings held.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let mut interner = Interner::new();
        let first = interner.get("run-1");
        let again = interner.get(&String::from("run-1"));
        assert!(Arc::ptr_eq(&first, &again));
        assert!(!Arc::ptr_eq(&first, &interner.get("run-2")));
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn copies_no_one_holds_are_dropped() {
        let mut interner = Interner::new();
        let kept = interner.get("kept");
        drop(interner.get("gone"));
        interner.drop_unused();
        assert_eq!(interner.len(), 1);
        assert!(Arc::ptr_eq(&kept, &interner.get("kept")));
    }
}
