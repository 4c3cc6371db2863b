//! Balancing strategies: which of the available backends of the best priority tier takes a
//! request. Pure choices over meters; no I/O, no waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use switchyard_config::{BackendConfig, LimitsConfig, RouteConfig, Strategy};

use super::meters::{Meter, Meters};
use crate::estimate::Prompt;
use crate::runtime::Runtime;

/// Balancing state of one route (one config generation).
#[derive(Debug)]
pub struct Balance {
    /// Smooth weighted round-robin counters, one per backend.
    wrr: Mutex<Vec<i64>>,
    /// Cooldown and meter key of each backend: `provider|model`.
    pub keys: Vec<String>,
    meters: OnceLock<Vec<BackendMeters>>,
}

/// The meters that speak for one backend.
#[derive(Debug, Clone)]
pub struct BackendMeters {
    /// The deployment's (`provider|model`).
    pub deployment: Arc<Meter>,
    /// The provider account's.
    pub provider: Arc<Meter>,
    /// The provider account's quota.
    pub quota: LimitsConfig,
}

impl Balance {
    /// Fresh state for a route.
    pub fn new(route: &RouteConfig) -> Self {
        Self {
            wrr: Mutex::new(vec![0; route.backends.len()]),
            keys: route
                .backends
                .iter()
                .map(|b| format!("{}|{}", b.provider, b.model))
                .collect(),
            meters: OnceLock::new(),
        }
    }

    /// The meters of each backend, looked up once per route.
    pub fn meters(&self, rt: &Runtime, meters: &Meters, route: &RouteConfig) -> &[BackendMeters] {
        self.meters.get_or_init(|| {
            route
                .backends
                .iter()
                .zip(&self.keys)
                .map(|(b, key)| BackendMeters {
                    deployment: meters.get(key),
                    provider: meters.get(&b.provider),
                    quota: rt.provider(&b.provider).map(|p| p.quota.clone()).unwrap_or_default(),
                })
                .collect()
        })
    }
}

/// A small, lock-free random source (splitmix64): a request needs a few coin flips, and the
/// thread RNG cannot be held across an await.
#[derive(Debug)]
pub struct Dice(AtomicU64);

impl Dice {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// Seeded from the thread RNG.
    pub fn random() -> Self {
        Self::new(rand::random())
    }

    /// 64 random bits.
    pub fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
        }
    }
}

/// A backend that may take the request, with its effective weight and tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Index in the route's backends.
    pub index: usize,
    /// Effective weight (> 0).
    pub weight: u32,
    /// Effective priority tier.
    pub priority: u32,
    /// Half-open: taking it means claiming its probe.
    pub probe: bool,
}

/// What a choice may look at.
pub struct Choice<'a> {
    /// The route's balancing state.
    pub balance: &'a Balance,
    /// The route's backends.
    pub backends: &'a [BackendConfig],
    /// Their meters.
    pub meters: &'a [BackendMeters],
    /// The strategy.
    pub strategy: Strategy,
    /// Whether the request streams (latency means time to first token).
    pub stream: bool,
    /// The prompt (prices and quotas).
    pub prompt: &'a Prompt,
    /// Randomness.
    pub dice: &'a Dice,
}

/// Picks among candidates: the best (lowest) tier, then the strategy. Returns a position in
/// `candidates`.
pub fn pick(c: &Choice<'_>, candidates: &[Candidate]) -> Option<usize> {
    let tier = candidates.iter().map(|x| x.priority).min()?;
    let tiered: Vec<usize> = (0..candidates.len())
        .filter(|i| candidates[*i].priority == tier)
        .collect();
    match c.strategy {
        Strategy::Weighted => smooth(c, candidates, &tiered),
        Strategy::Shuffle => random(c, candidates, &tiered),
        Strategy::LeastBusy => {
            let busy = |i: usize| {
                c.meters
                    .get(candidates[i].index)
                    .map_or(0, |m| m.deployment.in_flight())
            };
            let least = tiered.iter().map(|i| busy(*i)).min()?;
            let idle: Vec<usize> = tiered.iter().copied().filter(|i| busy(*i) == least).collect();
            random(c, candidates, &idle)
        }
        Strategy::Latency => two_choices(c, candidates, &tiered),
        Strategy::Cheapest => {
            let cost = |i: usize| {
                c.backends[candidates[i].index].price.map_or(f64::INFINITY, |p| {
                    p.input * c.prompt.rough() as f64 + p.output * c.prompt.completion() as f64
                })
            };
            let best = tiered.iter().map(|i| cost(*i)).fold(f64::INFINITY, f64::min);
            let cheapest: Vec<usize> = tiered
                .iter()
                .copied()
                .filter(|i| {
                    let x = cost(*i);
                    x == best || (x - best).abs() <= best.abs() * 1e-9
                })
                .collect();
            smooth(c, candidates, &cheapest)
        }
        Strategy::Usage => {
            let free = |i: usize| {
                let b = candidates[i].index;
                c.meters.get(b).map_or(1.0, |m| {
                    m.deployment
                        .headroom(&c.backends[b].limits)
                        .0
                        .min(m.provider.headroom(&m.quota).0)
                })
            };
            let best = tiered.iter().map(|i| free(*i)).fold(f64::NEG_INFINITY, f64::max);
            let freest: Vec<usize> = tiered
                .iter()
                .copied()
                .filter(|i| (free(*i) - best).abs() < 1e-9)
                .collect();
            smooth(c, candidates, &freest)
        }
    }
}

/// Smooth weighted round robin (nginx): a deterministic, evenly spread split by weight.
fn smooth(c: &Choice<'_>, candidates: &[Candidate], among: &[usize]) -> Option<usize> {
    let mut current = c.balance.wrr.lock().unwrap_or_else(|p| p.into_inner());
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for &i in among {
        let b = candidates[i].index;
        let w = i64::from(candidates[i].weight);
        let slot = current.get_mut(b)?;
        *slot += w;
        total += w;
        if best.is_none_or(|j| current[b] > current[candidates[j].index]) {
            best = Some(i);
        }
    }
    let i = best?;
    current[candidates[i].index] -= total;
    Some(i)
}

/// Weighted random.
fn random(c: &Choice<'_>, candidates: &[Candidate], among: &[usize]) -> Option<usize> {
    let total: u64 = among.iter().map(|i| u64::from(candidates[*i].weight)).sum();
    let mut r = c.dice.below(total);
    for &i in among {
        let w = u64::from(candidates[i].weight);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    among.last().copied()
}

/// Power of two choices on latency × (in flight + 1): two backends drawn by weight, the cheaper
/// wins. Unmeasured backends cost nothing, so they are tried first; idle averages decay (see
/// [`super::meters::DECAY`]), so a slow backend is probed again now and then.
fn two_choices(c: &Choice<'_>, candidates: &[Candidate], among: &[usize]) -> Option<usize> {
    let a = random(c, candidates, among)?;
    let rest: Vec<usize> = among.iter().copied().filter(|i| *i != a).collect();
    let Some(b) = random(c, candidates, &rest) else {
        return Some(a);
    };
    let cost = |i: usize| {
        c.meters.get(candidates[i].index).map_or(0.0, |m| {
            m.deployment.latency(c.stream).unwrap_or(0.0) * f64::from(m.deployment.in_flight() + 1)
        })
    };
    Some(if cost(b) < cost(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::route::meters::InFlight;
    use crate::route::testing::{backend, route_config};
    use switchyard_config::Price;

    struct Fixture {
        route: RouteConfig,
        balance: Balance,
        meters: Vec<BackendMeters>,
        prompt: Prompt,
        dice: Dice,
    }

    impl Fixture {
        fn new(backends: Vec<BackendConfig>) -> Self {
            let route = route_config("r", backends);
            let meters = route
                .backends
                .iter()
                .map(|_| BackendMeters {
                    deployment: Arc::new(Meter::default()),
                    provider: Arc::new(Meter::default()),
                    quota: LimitsConfig::default(),
                })
                .collect();
            Self {
                balance: Balance::new(&route),
                route,
                meters,
                prompt: Prompt::default(),
                dice: Dice::new(7),
            }
        }

        fn choice(&self, strategy: Strategy) -> Choice<'_> {
            Choice {
                balance: &self.balance,
                backends: &self.route.backends,
                meters: &self.meters,
                strategy,
                stream: false,
                prompt: &self.prompt,
                dice: &self.dice,
            }
        }

        fn candidates(&self) -> Vec<Candidate> {
            self.route
                .backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.weight > 0)
                .map(|(index, b)| Candidate {
                    index,
                    weight: b.weight,
                    priority: b.priority,
                    probe: false,
                })
                .collect()
        }

        fn counts(&self, strategy: Strategy, n: usize) -> Vec<usize> {
            let cands = self.candidates();
            let mut counts = vec![0; self.route.backends.len()];
            for _ in 0..n {
                if let Some(i) = pick(&self.choice(strategy), &cands) {
                    counts[cands[i].index] += 1;
                }
            }
            counts
        }
    }

    #[test]
    fn weighted_split_within_two_percent_over_10000_picks() {
        let f = Fixture::new(vec![
            backend("a", "m", 70, 0),
            backend("b", "m", 20, 0),
            backend("c", "m", 10, 0),
            backend("standby", "m", 50, 1),
        ]);
        for strategy in [Strategy::Weighted, Strategy::Shuffle] {
            let counts = f.counts(strategy, 10_000);
            for (got, want) in counts.iter().zip([0.70, 0.20, 0.10, 0.0]) {
                let share = *got as f64 / 10_000.0;
                assert!((share - want).abs() <= 0.02, "{strategy:?}: {counts:?}");
            }
        }
        // Round robin is exact, not only within 2%.
        assert_eq!(f.counts(Strategy::Weighted, 10_000), vec![7_000, 2_000, 1_000, 0]);
    }

    #[test]
    fn weighted_is_smooth() {
        let f = Fixture::new(vec![backend("a", "m", 3, 0), backend("b", "m", 1, 0)]);
        let cands = f.candidates();
        let picks: Vec<usize> = (0..8)
            .filter_map(|_| pick(&f.choice(Strategy::Weighted), &cands))
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn least_busy_prefers_the_idle_backend() {
        let f = Fixture::new(vec![
            backend("a", "m", 1, 0),
            backend("b", "m", 1, 0),
            backend("c", "m", 1, 0),
        ]);
        let _a = InFlight::start(&[&f.meters[0].deployment, &f.meters[0].deployment]);
        let _c = InFlight::start(&[&f.meters[2].deployment]);
        assert_eq!(f.counts(Strategy::LeastBusy, 100), vec![0, 100, 0]);
        let _b = InFlight::start(&[&f.meters[1].deployment]);
        // b and c both have one in flight now: they share, a (two) gets nothing.
        let counts = f.counts(Strategy::LeastBusy, 1_000);
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 400 && counts[2] > 400, "{counts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_prefers_the_fast_backend_yet_probes_the_slow_one() {
        let f = Fixture::new(vec![backend("fast", "m", 1, 0), backend("slow", "m", 1, 0)]);
        let cands = f.candidates();
        let mut counts = [0usize; 2];
        let mut slow_at = Vec::new();
        // Ten minutes of one request every 100 ms; each request's latency is observed.
        for step in 0..6_000u32 {
            let i = pick(&f.choice(Strategy::Latency), &cands).unwrap_or(0);
            let b = cands[i].index;
            counts[b] += 1;
            let took = if b == 0 {
                Duration::from_millis(50)
            } else {
                slow_at.push(step);
                Duration::from_millis(1_500)
            };
            f.meters[b].deployment.observe(false, took);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(counts[0] > 5_900, "{counts:?}");
        // Probed about every half minute (10 s × ln(30) ≈ 34 s), not just once at the start.
        assert!(counts[1] >= 10, "{counts:?}");
        assert!(slow_at.last().is_some_and(|s| *s > 5_000), "{slow_at:?}");

        // When the slow one gets fast, it wins its share back.
        let mut later = [0usize; 2];
        for _ in 0..3_000 {
            let i = pick(&f.choice(Strategy::Latency), &cands).unwrap_or(0);
            let b = cands[i].index;
            later[b] += 1;
            let took = Duration::from_millis(if b == 0 { 50 } else { 10 });
            f.meters[b].deployment.observe(false, took);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(later[1] > 2_500, "{later:?}");
    }

    #[test]
    fn cheapest_then_usage() {
        let mut a = backend("dear", "m", 1, 0);
        a.price = Some(Price {
            input: 5.0,
            output: 15.0,
            cached_input: 0.0,
            ..Price::default()
        });
        let mut b = backend("cheap", "m", 1, 0);
        b.price = Some(Price {
            input: 0.15,
            output: 0.6,
            cached_input: 0.0,
            ..Price::default()
        });
        let unknown = backend("unpriced", "m", 1, 0);
        let f = Fixture::new(vec![a, b, unknown]);
        assert_eq!(f.counts(Strategy::Cheapest, 10), vec![0, 10, 0]);

        let mut f = Fixture::new(vec![backend("a", "m", 1, 0), backend("b", "m", 1, 0)]);
        f.meters[0].quota = LimitsConfig {
            rpm: Some(100),
            ..Default::default()
        };
        f.meters[1].quota = LimitsConfig {
            rpm: Some(100),
            ..Default::default()
        };
        for _ in 0..50 {
            f.meters[0].provider.sent(1);
        }
        for _ in 0..10 {
            f.meters[1].provider.sent(1);
        }
        // b has 90% headroom, a 50%.
        assert_eq!(f.counts(Strategy::Usage, 5), vec![0, 5]);
    }

    #[test]
    fn a_lower_tier_serves_only_when_the_better_tier_is_missing() {
        let f = Fixture::new(vec![backend("primary", "m", 1, 0), backend("standby", "m", 1, 1)]);
        let all = f.candidates();
        assert_eq!(f.counts(Strategy::Weighted, 10), vec![10, 0]);
        let standby_only = vec![all[1]];
        assert_eq!(pick(&f.choice(Strategy::Shuffle), &standby_only), Some(0));
        assert_eq!(pick(&f.choice(Strategy::Shuffle), &[]), None);
    }

    #[test]
    fn dice_is_uniform_enough() {
        let d = Dice::new(1);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[d.below(10) as usize] += 1;
        }
        assert!(buckets.iter().all(|b| (9_500..10_500).contains(b)), "{buckets:?}");
        assert!((0..1000).all(|_| (0.0..1.0).contains(&d.unit())));
    }
}
