//! The shared-state contract between gateways (which write it) and the operator (which reads
//! it for VirtualKey and Budget status and cleans it up when a key is deleted): budget periods
//! and the Redis key names.
//!
//! Periods start at UTC boundaries: midnight (daily), Monday midnight (weekly), the 1st of the
//! month (monthly); `total` never resets. A period's id names its start (`d2026-11-25`,
//! `w2026-11-23`, `m2026-11`, `total`), so every replica agrees on it without talking.
//!
//! Redis keys carry a `{...}` hash tag so one scope's keys share a Redis Cluster slot.

use std::cell::RefCell;

use crate::BudgetPeriod;

const DAY_MS: i64 = 86_400_000;
/// How long a finished period's spend is kept in Redis, for the operator to report.
const KEEP_AFTER_END_MS: i64 = 35 * DAY_MS;

/// The shared-state scope of a virtual key: `k:<namespace>/<name>`.
pub fn key_scope(namespace: &str, name: &str) -> String {
    format!("k:{namespace}/{name}")
}

/// The shared-state scope of a `Budget` over a group of keys: `t:<namespace>/<name>`. It holds
/// only a spend counter and a reservation set per period (names as a key's).
pub fn budget_scope(namespace: &str, name: &str) -> String {
    format!("t:{namespace}/{name}")
}

/// Redis key names. Those a request builds are `#[inline]` (see [`Period::of`]).
pub mod redis_keys {
    /// A window, slot set, spend counter or reservation set of a scope.
    #[inline]
    pub fn scoped(scope: &str, what: &str) -> String {
        format!("swy:{{{scope}}}:{what}")
    }
    /// The spend counter (USD, a decimal string) of a scope in a period: [`scoped`]'s name,
    /// written in one `format!` (a request builds it).
    #[inline]
    pub fn spend(scope: &str, period: &str) -> String {
        format!("swy:{{{scope}}}:spend:{period}")
    }
    /// The reservation set of a scope in a period: [`scoped`]'s name, in one `format!`.
    #[inline]
    pub fn holds(scope: &str, period: &str) -> String {
        format!("swy:{{{scope}}}:hold:{period}")
    }
    /// When a scope last finished a request (ms since the epoch, a decimal string).
    pub fn last_used(scope: &str) -> String {
        scoped(scope, "last")
    }
    /// Every key a scope may have now, for cleanup when its VirtualKey is deleted: the windows,
    /// the slot set, last use, and the spend and reservations of the periods containing
    /// `now_ms` (the counters of older periods expire on their own).
    pub fn all(scope: &str, now_ms: i64) -> Vec<String> {
        let mut out: Vec<String> = ["rpm", "tpm", "par", "last"].iter().map(|w| scoped(scope, w)).collect();
        for kind in [
            crate::BudgetPeriod::Daily,
            crate::BudgetPeriod::Weekly,
            crate::BudgetPeriod::Monthly,
            crate::BudgetPeriod::Total,
        ] {
            let p = super::Period::of(kind, now_ms);
            out.push(spend(scope, &p.id));
            out.push(holds(scope, &p.id));
        }
        out
    }
}

/// One budget period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    /// Id, part of the Redis key.
    pub id: String,
    /// Start, ms since the epoch (0 for `total`).
    pub start_ms: i64,
    /// End, ms since the epoch; `None` for `total`.
    pub end_ms: Option<i64>,
}

thread_local! {
    /// The last period of each kind this thread worked out: every request asks for the one it
    /// falls in (its id is a `format!`), which stays the same until the period ends.
    static LAST: RefCell<[Option<Period>; 4]> = const { RefCell::new([None, None, None, None]) };
}

impl Period {
    /// The period of `kind` that contains `now_ms`. It and the accessors below are `#[inline]`:
    /// a request calls them, and `release` builds this crate unoptimised (types.rs).
    #[inline]
    pub fn of(kind: BudgetPeriod, now_ms: i64) -> Self {
        let slot = match kind {
            BudgetPeriod::Daily => 0,
            BudgetPeriod::Weekly => 1,
            BudgetPeriod::Monthly => 2,
            BudgetPeriod::Total => 3,
        };
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &last[slot] {
                Some(p) if p.contains(now_ms) => p.clone(),
                _ => {
                    let p = Self::work_out(kind, now_ms);
                    last[slot] = Some(p.clone());
                    p
                }
            }
        })
    }

    /// Whether `now_ms` falls in this period.
    #[inline]
    fn contains(&self, now_ms: i64) -> bool {
        now_ms >= self.start_ms && self.end_ms.is_none_or(|end| now_ms < end)
    }

    fn work_out(kind: BudgetPeriod, now_ms: i64) -> Self {
        let day = now_ms.div_euclid(DAY_MS);
        match kind {
            BudgetPeriod::Daily => {
                let (y, m, d) = civil_from_days(day);
                Self {
                    id: format!("d{y:04}-{m:02}-{d:02}"),
                    start_ms: day * DAY_MS,
                    end_ms: Some((day + 1) * DAY_MS),
                }
            }
            BudgetPeriod::Weekly => {
                // 1970-01-01 was a Thursday: Monday-based weekday = (day + 3) mod 7.
                let monday = day - (day + 3).rem_euclid(7);
                let (y, m, d) = civil_from_days(monday);
                Self {
                    id: format!("w{y:04}-{m:02}-{d:02}"),
                    start_ms: monday * DAY_MS,
                    end_ms: Some((monday + 7) * DAY_MS),
                }
            }
            BudgetPeriod::Monthly => {
                let (y, m, _) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Self {
                    id: format!("m{y:04}-{m:02}"),
                    start_ms: days_from_civil(y, m, 1) * DAY_MS,
                    end_ms: Some(days_from_civil(ny, nm, 1) * DAY_MS),
                }
            }
            BudgetPeriod::Total => Self {
                id: "total".into(),
                start_ms: 0,
                end_ms: None,
            },
        }
    }

    /// Until the period ends, ms.
    #[inline]
    pub fn resets_in_ms(&self, now_ms: i64) -> Option<i64> {
        self.end_ms.map(|e| (e - now_ms).max(1))
    }

    /// How long a spend counter written now is kept: until a while after the period ends.
    #[inline]
    pub fn keep_ms(&self, now_ms: i64) -> Option<i64> {
        self.end_ms.map(|e| (e - now_ms).max(0) + KEEP_AFTER_END_MS)
    }

    /// Start as RFC 3339 (UTC).
    pub fn start_rfc3339(&self) -> String {
        rfc3339(self.start_ms)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(ms: i64) -> String {
    let day = ms.div_euclid(DAY_MS);
    let secs = ms.rem_euclid(DAY_MS) / 1000;
    let (y, m, d) = civil_from_days(day);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day). Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_and_hold_keys_are_scoped_names() {
        let scope = budget_scope("apps", "team-a");
        assert_eq!(
            redis_keys::spend(&scope, "m2026-11"),
            redis_keys::scoped(&scope, "spend:m2026-11")
        );
        assert_eq!(
            redis_keys::holds(&scope, "total"),
            redis_keys::scoped(&scope, "hold:total")
        );
    }

    // 2026-11-25T13:45:10Z, a Wednesday.
    const NOW: i64 = 1_795_614_310_000;

    #[test]
    fn periods_start_at_utc_boundaries() {
        assert_eq!(rfc3339(NOW), "2026-11-25T13:45:10Z");
        let d = Period::of(BudgetPeriod::Daily, NOW);
        assert_eq!(d.id, "d2026-11-25");
        assert_eq!(rfc3339(d.start_ms), "2026-11-25T00:00:00Z");
        assert_eq!(d.end_ms.map(rfc3339).as_deref(), Some("2026-11-26T00:00:00Z"));
        let w = Period::of(BudgetPeriod::Weekly, NOW);
        assert_eq!(w.id, "w2026-11-23");
        assert_eq!(w.end_ms.map(rfc3339).as_deref(), Some("2026-11-30T00:00:00Z"));
        let m = Period::of(BudgetPeriod::Monthly, NOW);
        assert_eq!(m.id, "m2026-11");
        assert_eq!(m.end_ms.map(rfc3339).as_deref(), Some("2026-12-01T00:00:00Z"));
        let dec = Period::of(BudgetPeriod::Monthly, NOW + 10 * DAY_MS);
        assert_eq!(dec.id, "m2026-12");
        assert_eq!(dec.end_ms.map(rfc3339).as_deref(), Some("2027-01-01T00:00:00Z"));
        let t = Period::of(BudgetPeriod::Total, NOW);
        assert_eq!((t.id.as_str(), t.end_ms), ("total", None));
        assert_eq!(t.resets_in_ms(NOW), None);
    }

    #[test]
    fn the_period_changes_exactly_at_midnight() {
        let midnight = Period::of(BudgetPeriod::Daily, NOW).end_ms.unwrap_or_default();
        assert_eq!(Period::of(BudgetPeriod::Daily, midnight - 1).id, "d2026-11-25");
        assert_eq!(Period::of(BudgetPeriod::Daily, midnight).id, "d2026-11-26");
        assert_eq!(
            Period::of(BudgetPeriod::Daily, midnight - 1).resets_in_ms(midnight - 1),
            Some(1)
        );
        // Leap day and a Monday.
        let leap = days_from_civil(2028, 2, 29) * DAY_MS;
        assert_eq!(Period::of(BudgetPeriod::Daily, leap).id, "d2028-02-29");
        let monday = days_from_civil(2026, 11, 30) * DAY_MS;
        assert_eq!(Period::of(BudgetPeriod::Weekly, monday).id, "w2026-11-30");
        assert_eq!(Period::of(BudgetPeriod::Weekly, monday - 1).id, "w2026-11-23");
    }

    /// The period a thread worked out last is reused only for a time inside it: a clock that
    /// jumps forward or back (skew between replicas, a corrected clock) gets the period of the
    /// time it asks for, never the cached one.
    #[test]
    fn a_remembered_period_is_given_only_for_times_inside_it() {
        let kinds = [
            BudgetPeriod::Daily,
            BudgetPeriod::Weekly,
            BudgetPeriod::Monthly,
            BudgetPeriod::Total,
        ];
        // Around month, week and day ends, forward and back, over four years.
        let mut times = Vec::new();
        let mut t = NOW;
        for step in 0..2_000i64 {
            t += (step % 7 - 2) * 13 * 3_600_000 + step * 60_001;
            times.extend([t, t - 1, t + 1, -t / 3]);
        }
        for now in times {
            for kind in kinds {
                assert_eq!(Period::of(kind, now), Period::work_out(kind, now), "{kind:?} at {now}");
            }
        }
    }

    #[test]
    fn cleanup_names_every_key_of_the_scope_in_one_slot() {
        let scope = key_scope("apps", "team-a");
        let all = redis_keys::all(&scope, NOW);
        assert!(
            all.contains(&"swy:{k:apps/team-a}:spend:m2026-11".to_owned()),
            "{all:?}"
        );
        assert!(all.contains(&"swy:{k:apps/team-a}:spend:total".to_owned()), "{all:?}");
        assert!(all.contains(&"swy:{k:apps/team-a}:last".to_owned()), "{all:?}");
        assert_eq!(all.len(), 12);
        assert!(all.iter().all(|k| k.starts_with("swy:{k:apps/team-a}:")));
    }
}
