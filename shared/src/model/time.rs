//! Clocks and TTL arithmetic: durations arrive in nanoseconds, responses speak milliseconds, and
//! DynamoDB's TTL attribute wants epoch seconds.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn ns_to_ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The exact expiry of a value written at `written_ns` with `ttl_ns`; None when it never expires.
pub fn expiry_ns(written_ns: u64, ttl_ns: i64) -> Option<u64> {
    u64::try_from(ttl_ns)
        .ok()
        .filter(|ttl| *ttl > 0)
        .map(|ttl| written_ns.saturating_add(ttl))
}

/// DynamoDB's TTL attribute: epoch seconds, rounded up so the sweep never runs before the exact
/// expiry that reads enforce.
pub fn ttl_attribute_secs(expiry_ns: u64) -> u64 {
    expiry_ns.div_ceil(1_000_000_000)
}

pub fn is_expired(expiry_ns: Option<u64>, now_ns: u64) -> bool {
    expiry_ns.is_some_and(|expiry| expiry <= now_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_attribute_secs(1_000_000_000), 1);
        assert_eq!(ttl_attribute_secs(1_000_000_001), 2);
        assert_eq!(expiry_ns(5, 0), None);
        assert_eq!(expiry_ns(5, 10), Some(15));
        assert_eq!(expiry_ns(u64::MAX - 1, i64::MAX), Some(u64::MAX));
        assert!(is_expired(Some(10), 10));
        assert!(!is_expired(Some(11), 10));
        assert!(!is_expired(None, u64::MAX));
    }
}
