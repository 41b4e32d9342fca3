//! Assertions already verified, remembered by their exact bytes until they
//! expire, so the ES256 check runs once per assertion rather than once per
//! request.
//!
//! A fixed table of slots, two-way set-associative: an assertion may live
//! in one of two neighbouring slots picked by a keyed hash of its signature
//! part. A lookup is two atomic loads, a hash and a byte comparison: no
//! lock, no allocation. An insert replaces an empty or expired slot, else
//! the one that expires first. The memory is bounded by the slot count;
//! only assertions that verified are ever stored.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::IapIdentity;

struct Entry {
    assertion: Box<[u8]>,
    /// Unix second after which the entry is no longer valid (`exp` + leeway).
    valid_until: u64,
    identity: IapIdentity,
}

pub(crate) struct Remembered {
    slots: Box<[ArcSwapOption<Entry>]>,
    hasher: RandomState,
}

impl Remembered {
    /// Room for about `capacity` assertions (rounded up to an even power
    /// of two); 0 remembers nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        let len = if capacity == 0 {
            0
        } else {
            capacity.max(2).next_power_of_two()
        };
        Self {
            slots: (0..len).map(|_| ArcSwapOption::empty()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The first of the two slots `assertion` may live in.
    fn set_of(&self, assertion: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        // The signature part differs between any two assertions and is
        // short: hashing it alone is enough to spread them.
        let tail = match assertion.iter().rposition(|&b| b == b'.') {
            Some(dot) => &assertion[dot + 1..],
            None => assertion,
        };
        let hash = self.hasher.hash_one(tail) as usize;
        Some(hash & (self.slots.len() - 1) & !1)
    }

    /// The identity of `assertion` if it was verified and is still valid at
    /// unix second `now`.
    pub(crate) fn get(&self, assertion: &[u8], now: u64) -> Option<IapIdentity> {
        let first = self.set_of(assertion)?;
        for slot in &self.slots[first..first + 2] {
            let entry = slot.load();
            if let Some(entry) = entry.as_ref()
                && *entry.assertion == *assertion
            {
                return (now <= entry.valid_until).then(|| entry.identity.clone());
            }
        }
        None
    }

    /// Remembers a verified assertion until unix second `valid_until`.
    pub(crate) fn insert(
        &self,
        assertion: &[u8],
        valid_until: u64,
        identity: IapIdentity,
        now: u64,
    ) {
        let Some(first) = self.set_of(assertion) else {
            return;
        };
        let pair = &self.slots[first..first + 2];
        let until = |i: usize| -> Option<u64> { pair[i].load().as_ref().map(|e| e.valid_until) };
        let victim = match (until(0), until(1)) {
            (None, _) => 0,
            (_, None) => 1,
            (Some(a), _) if a < now => 0,
            (_, Some(b)) if b < now => 1,
            (Some(a), Some(b)) => usize::from(b < a),
        };
        pair[victim].store(Some(Arc::new(Entry {
            assertion: assertion.into(),
            valid_until,
            identity,
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str) -> IapIdentity {
        let claims = serde_json::json!({"sub": sub});
        let serde_json::Value::Object(claims) = claims else {
            unreachable!()
        };
        IapIdentity::from_claims(claims, "/aud".into(), 100).unwrap()
    }

    #[test]
    fn remembers_exact_bytes_until_valid_until() {
        let cache = Remembered::new(8);
        cache.insert(b"h.p.sig1", 100, identity("a"), 10);
        assert_eq!(cache.get(b"h.p.sig1", 100).unwrap().subject(), "a");
        assert!(cache.get(b"h.p.sig1", 101).is_none());
        // Same signature part, other bytes: not the same assertion.
        assert!(cache.get(b"h.q.sig1", 50).is_none());
        assert!(cache.get(b"h.p.sig2", 50).is_none());
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let cache = Remembered::new(0);
        cache.insert(b"a.b.c", 100, identity("a"), 10);
        assert!(cache.get(b"a.b.c", 50).is_none());
    }

    #[test]
    fn memory_is_bounded_and_recent_entries_survive() {
        let cache = Remembered::new(4);
        for i in 0..1000u64 {
            let assertion = format!("h.p.{i}");
            cache.insert(assertion.as_bytes(), 1000 + i, identity("x"), 0);
            assert!(cache.get(assertion.as_bytes(), 0).is_some());
        }
        assert_eq!(cache.slots.len(), 4);
        let held = cache.slots.iter().filter(|s| s.load().is_some()).count();
        assert!(held <= 4);
    }
}
