//! [`WatchBackoff`]: how every Kubernetes watch of Switchyard (the gateway's shard watches, the
//! operator's watches) waits after an error before it reconnects or re-lists.
//!
//! kube-runtime's `default_backoff` doubles from 0.8 s up to 30 s and only resets once the
//! stream yields something. While the API server is down each reconnect fails, so after a 20 s
//! outage the next wait is already ~25 s; the first answer of the restarted server is then
//! `410 Gone` (the watch's resourceVersion is older than its new watch cache), which is one
//! more error, and the re-list came ~50 s after the server was back (measured). Capped at
//! [`MAX`], a re-list follows within about a second of the server answering again; the cost
//! is one request per watch every second while it is down.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use kube::runtime::utils::Backoff;

/// First wait after an error.
pub const MIN: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
pub const MAX: Duration = Duration::from_secs(1);

/// Exponential from [`MIN`], doubling, capped at [`MAX`], with up to a quarter taken off at
/// random (so that many watches do not reconnect in step); reset by any successful event.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let nominal = self.next;
        self.next = (nominal * 2).min(MAX);
        // A random fraction in [0, 1/4) without a random number crate: RandomState is seeded
        // per instance.
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let cut = nominal.mul_f64((random % 1000) as f64 / 4000.0);
        Some(nominal.saturating_sub(cut))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_a_second_and_resets() {
        let mut b = WatchBackoff::default();
        let waits: Vec<Duration> = b.by_ref().take(12).collect();
        for (i, w) in waits.iter().enumerate() {
            let nominal = (MIN * 2u32.pow(u32::try_from(i.min(3)).unwrap_or(3))).min(MAX);
            assert!(*w <= nominal && *w >= nominal * 3 / 4, "wait {i}: {w:?} vs {nominal:?}");
        }
        // After 20 s of failures the next wait is at most a second, not half a minute.
        let total: Duration = waits.iter().sum();
        assert!(total >= Duration::from_secs(7), "{total:?}");
        assert!(waits.iter().all(|w| *w <= MAX));
        b.reset();
        assert!(b.next().is_some_and(|w| w <= MIN));
    }
}
