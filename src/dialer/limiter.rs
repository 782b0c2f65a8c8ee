//! The calls-per-second limiter: never more than N call starts in any one-second window.
//!
//! A token bucket of capacity N refilled at N per second admits a full bucket at the end of one
//! second and N refilled tokens right after, so up to 2N starts can land inside one second that
//! straddles the refill; carriers count starts per rolling second and reject the excess. This
//! limiter therefore keeps a sliding log of the last N start instants and admits a start only
//! when the oldest of them is at least one second old. That bound holds for every window
//! `[t, t + 1 s)`, a burst of N still goes out at once (no added latency when idle, unlike a
//! capacity-1 bucket refilled every 1/N s), and memory is O(N).
//!
//! [`SlidingWindow`] is the pure core over a caller-given clock; [`LocalCpsLimiter`] is the
//! in-process [`CpsLimiter`] on tokio time. A limiter shared by several gateways (the same log
//! kept in Redis) is a separate implementation of the same trait.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;

/// The window length the limit applies to.
pub const WINDOW: Duration = Duration::from_secs(1);

/// A point on a monotonic clock the limiter can reason about.
pub trait Moment: Copy + Ord {
    /// The time from `earlier` to `self`, zero if `earlier` is later.
    fn since(self, earlier: Self) -> Duration;
}

impl Moment for std::time::Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Moment for tokio::time::Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// Time since an arbitrary origin; handy for simulated clocks.
impl Moment for Duration {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_sub(earlier)
    }
}

/// Refusal from [`SlidingWindow::try_acquire`]: how long until a start would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait(pub Duration);

/// The pure core: the last N start instants.
#[derive(Debug, Clone)]
pub struct SlidingWindow<T> {
    per_second: NonZeroU32,
    starts: VecDeque<T>,
}

impl<T: Moment> SlidingWindow<T> {
    /// A limiter admitting at most `per_second` starts in any one-second window.
    pub fn new(per_second: NonZeroU32) -> Self {
        SlidingWindow {
            per_second,
            starts: VecDeque::with_capacity(per_second.get() as usize),
        }
    }

    /// The configured limit.
    pub fn per_second(&self) -> NonZeroU32 {
        self.per_second
    }

    /// Admits a start at `now`, or says how long to wait. Times must not go backwards; a `now`
    /// earlier than the latest admitted start is treated as that start's instant.
    pub fn try_acquire(&mut self, now: T) -> Result<(), Wait> {
        let now = match self.starts.back() {
            Some(&latest) if latest > now => latest,
            _ => now,
        };
        if self.starts.len() >= self.per_second.get() as usize {
            if let Some(&oldest) = self.starts.front() {
                let age = now.since(oldest);
                if age < WINDOW {
                    return Err(Wait(WINDOW - age));
                }
            }
            self.starts.pop_front();
        }
        self.starts.push_back(now);
        Ok(())
    }
}

/// Paces call starts to a calls-per-second limit.
#[async_trait]
pub trait CpsLimiter: Send + Sync {
    /// Waits until a call may start, and counts it as started.
    async fn acquire(&self);
}

/// The in-process limiter on tokio time. Waiters are served in arrival order (the tokio mutex
/// is fair), so a saturated limiter starts calls at exactly its rate and starves no one.
#[derive(Debug)]
pub struct LocalCpsLimiter {
    window: tokio::sync::Mutex<SlidingWindow<tokio::time::Instant>>,
}

impl LocalCpsLimiter {
    /// A limiter admitting at most `per_second` starts in any one-second window.
    pub fn new(per_second: NonZeroU32) -> Self {
        LocalCpsLimiter {
            window: tokio::sync::Mutex::new(SlidingWindow::new(per_second)),
        }
    }
}

#[async_trait]
impl CpsLimiter for LocalCpsLimiter {
    async fn acquire(&self) {
        // Held across the sleep: the next waiter queues behind this one, in order.
        let mut window = self.window.lock().await;
        loop {
            match window.try_acquire(tokio::time::Instant::now()) {
                Ok(()) => return,
                Err(Wait(wait)) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// One limiter per carrier account: calls placed through a carrier wait on its limiter.
#[derive(Clone)]
pub struct CpsLimiters {
    twilio: std::sync::Arc<dyn CpsLimiter>,
    exotel: std::sync::Arc<dyn CpsLimiter>,
}

impl std::fmt::Debug for CpsLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpsLimiters").finish_non_exhaustive()
    }
}

impl CpsLimiters {
    /// These limiters.
    pub fn new(
        twilio: std::sync::Arc<dyn CpsLimiter>,
        exotel: std::sync::Arc<dyn CpsLimiter>,
    ) -> CpsLimiters {
        CpsLimiters { twilio, exotel }
    }

    /// In-process limiters at these rates.
    pub fn local(twilio_cps: NonZeroU32, exotel_cps: NonZeroU32) -> CpsLimiters {
        CpsLimiters::new(
            std::sync::Arc::new(LocalCpsLimiter::new(twilio_cps)),
            std::sync::Arc::new(LocalCpsLimiter::new(exotel_cps)),
        )
    }

    /// The limiter of `carrier`'s account.
    pub fn for_carrier(
        &self,
        carrier: crate::control::dial::CarrierName,
    ) -> std::sync::Arc<dyn CpsLimiter> {
        match carrier {
            crate::control::dial::CarrierName::Twilio => self.twilio.clone(),
            crate::control::dial::CarrierName::Exotel => self.exotel.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn burst_then_wait_for_the_oldest() {
        let mut w = SlidingWindow::new(n(3));
        assert_eq!(w.try_acquire(ms(0)), Ok(()));
        assert_eq!(w.try_acquire(ms(100)), Ok(()));
        assert_eq!(w.try_acquire(ms(200)), Ok(()));
        assert_eq!(w.try_acquire(ms(300)), Err(Wait(ms(700))));
        assert_eq!(w.try_acquire(ms(999)), Err(Wait(ms(1))));
        assert_eq!(w.try_acquire(ms(1000)), Ok(()));
        assert_eq!(w.try_acquire(ms(1000)), Err(Wait(ms(100))));
        assert_eq!(w.try_acquire(ms(1100)), Ok(()));
    }

    #[test]
    fn no_double_burst_across_a_refill() {
        // A token bucket with burst 5 would admit 5 at 999 ms and 5 more at 1000 ms.
        let mut w = SlidingWindow::new(n(5));
        for _ in 0..5 {
            assert_eq!(w.try_acquire(ms(999)), Ok(()));
        }
        assert_eq!(w.try_acquire(ms(1000)), Err(Wait(ms(999))));
        assert_eq!(w.try_acquire(ms(1998)), Err(Wait(ms(1))));
        assert_eq!(w.try_acquire(ms(1999)), Ok(()));
    }

    #[test]
    fn clock_going_backwards_cannot_sneak_in() {
        let mut w = SlidingWindow::new(n(1));
        assert_eq!(w.try_acquire(ms(5000)), Ok(()));
        assert_eq!(w.try_acquire(ms(10)), Err(Wait(ms(1000))));
        assert_eq!(w.try_acquire(ms(6000)), Ok(()));
    }

    #[test]
    fn works_on_std_instants() {
        let base = std::time::Instant::now();
        let mut w = SlidingWindow::new(n(1));
        assert_eq!(w.try_acquire(base), Ok(()));
        assert_eq!(w.try_acquire(base + ms(400)), Err(Wait(ms(600))));
        assert_eq!(w.try_acquire(base + ms(1000)), Ok(()));
        assert_eq!(w.per_second(), n(1));
    }

    /// Replays arrivals through the core: each caller retries after the wait it is given, in
    /// arrival order, as `LocalCpsLimiter` does. Returns the admitted start times.
    fn simulate(per_second: u32, arrivals: &[Duration]) -> Vec<Duration> {
        let mut w = SlidingWindow::new(n(per_second));
        let mut clock = Duration::ZERO;
        let mut starts = Vec::with_capacity(arrivals.len());
        for &arrival in arrivals {
            clock = clock.max(arrival);
            loop {
                match w.try_acquire(clock) {
                    Ok(()) => break,
                    Err(Wait(wait)) => {
                        assert!(wait > Duration::ZERO && wait <= WINDOW);
                        clock += wait;
                    }
                }
            }
            starts.push(clock);
        }
        starts
    }

    proptest! {
        #[test]
        fn never_more_than_n_in_any_second(
            per_second in 1u32..20,
            mut arrivals in proptest::collection::vec(0u64..5_000_000, 1..300),
        ) {
            arrivals.sort_unstable();
            let arrivals: Vec<Duration> = arrivals.into_iter().map(Duration::from_micros).collect();
            let starts = simulate(per_second, &arrivals);
            let n = per_second as usize;
            // Any window [t, t + 1 s) holding N + 1 starts would hold starts i and i + N.
            for pair in starts.windows(n + 1) {
                prop_assert!(pair[n] - pair[0] >= WINDOW, "{:?}", pair);
            }
            // Nobody starts before arriving, and everyone starts.
            prop_assert_eq!(starts.len(), arrivals.len());
            for (s, a) in starts.iter().zip(&arrivals) {
                prop_assert!(s >= a);
            }
        }

        #[test]
        fn saturated_limiter_admits_at_rate_n(
            per_second in 1u32..50,
            seconds in 1u32..10,
            mut arrivals in proptest::collection::vec(0u64..1_000, 1..40),
        ) {
            // Far more callers than the limit, all arriving within the first millisecond.
            let total = (per_second * seconds) as usize + 1;
            arrivals.resize(total, 0);
            arrivals.sort_unstable();
            let arrivals: Vec<Duration> = arrivals.into_iter().map(Duration::from_micros).collect();
            let starts = simulate(per_second, &arrivals);
            let first = arrivals[0];
            // `seconds` full windows admit exactly N each: the last one starts `seconds`
            // windows after the first, no later.
            let last = starts[total - 1];
            prop_assert!(last - first <= WINDOW * seconds + Duration::from_millis(1),
                "{total} starts took {:?}", last - first);
            prop_assert!(last - first >= WINDOW * seconds);
        }
    }

    /// The most starts inside any window `[t, t + 1 s)`, counted directly.
    fn busiest_window(sorted: &[Duration]) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..sorted.len() {
            while sorted[hi] - sorted[lo] >= WINDOW {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn exact_window_boundaries() {
        // A start exactly one second after the oldest is admitted; a microsecond earlier is not.
        let us = Duration::from_micros;
        let mut w = SlidingWindow::new(n(2));
        assert_eq!(w.try_acquire(us(10)), Ok(()));
        assert_eq!(w.try_acquire(us(20)), Ok(()));
        assert_eq!(w.try_acquire(us(1_000_009)), Err(Wait(us(1))));
        assert_eq!(w.try_acquire(us(1_000_010)), Ok(()));
        assert_eq!(w.try_acquire(us(1_000_019)), Err(Wait(us(1))));
        assert_eq!(w.try_acquire(us(1_000_020)), Ok(()));
        // The windows [10 µs, 1 s + 10 µs) and [20 µs, 1 s + 20 µs) each hold two starts.
        let starts = [us(10), us(20), us(1_000_010), us(1_000_020)];
        assert_eq!(busiest_window(&starts), 2);
    }

    #[test]
    fn repeated_bursts_after_idle_gaps() {
        // Bursts of 2N arriving together, a quiet second and more between bursts: each burst
        // sends N at once and the rest exactly one window later.
        let starts = simulate(
            10,
            &(0..5u64)
                .flat_map(|burst| std::iter::repeat_n(ms(burst * 5_000), 20))
                .collect::<Vec<_>>(),
        );
        for burst in 0..5u64 {
            let first = &starts[(burst * 20) as usize..(burst * 20 + 10) as usize];
            let second = &starts[(burst * 20 + 10) as usize..(burst * 20 + 20) as usize];
            assert!(first.iter().all(|&s| s == ms(burst * 5_000)));
            assert!(second.iter().all(|&s| s == ms(burst * 5_000 + 1_000)));
        }
        assert_eq!(busiest_window(&starts), 10);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn long_bursty_runs_keep_the_limit_and_waste_nothing(
            per_second in 1u32..40,
            clusters in proptest::collection::vec((0u64..20_000_000, 1usize..200), 1..20),
        ) {
            // Clustered arrivals over 20 s, up to ~4000 callers.
            let mut arrivals: Vec<Duration> = clusters
                .iter()
                .flat_map(|&(at, count)| (0..count).map(move |i| Duration::from_micros(at + i as u64 * 37)))
                .collect();
            arrivals.sort_unstable();
            let starts = simulate(per_second, &arrivals);
            let n = per_second as usize;
            prop_assert!(busiest_window(&starts) <= n);
            // Served in order, each as early as the limit allows: at its arrival, after the
            // previous start, and one window after the start N places earlier.
            for i in 0..starts.len() {
                let mut earliest = arrivals[i];
                if i > 0 {
                    earliest = earliest.max(starts[i - 1]);
                }
                if i >= n {
                    earliest = earliest.max(starts[i - n] + WINDOW);
                }
                prop_assert_eq!(starts[i], earliest, "start {}", i);
            }
        }
    }

    #[tokio::test]
    async fn local_limiter_paces_concurrent_callers() {
        let limiter: Arc<dyn CpsLimiter> = Arc::new(LocalCpsLimiter::new(n(20)));
        let begin = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..21)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    tokio::time::Instant::now()
                })
            })
            .collect();
        let mut started = Vec::new();
        for task in tasks {
            started.push(task.await.unwrap());
        }
        started.sort_unstable();
        // Sleeps never end early, so the 21st start is at least a second after the first
        // could have started.
        assert_eq!(started.len(), 21);
        assert!(started[20] - begin >= WINDOW);
        assert!(started[19] >= begin);
    }
}
