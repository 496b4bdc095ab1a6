//! Restart backoff as pure logic over explicit instants (tests use a fake clock).
//!
//! The delay starts at `restart_delay` and doubles after every restart up to
//! `restart_delay_max`; a run of at least `stable_after` resets it. When `crash_loop.restarts`
//! restarts happened within `crash_loop.window`, the service is in a crash loop: the delay is
//! the cap, and the supervisor says so in the log, until a stable run ends it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rampart_config::BackoffConfig;

/// What the next restart looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextRestart {
    /// Wait this long before starting again.
    pub delay: Duration,
    /// The service is in a crash loop.
    pub crash_loop: bool,
    /// Restarts counted within the crash-loop window (this one included).
    pub recent: usize,
}

/// The backoff state of one service.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    next: Duration,
    recent: VecDeque<Instant>,
}

impl Backoff {
    /// A fresh state: the next delay is `cfg.initial`.
    pub fn new(cfg: BackoffConfig) -> Self {
        Self {
            cfg,
            next: cfg.initial,
            recent: VecDeque::new(),
        }
    }

    /// The service exited at `now` after running `ran_for`: the restart to schedule.
    pub fn on_exit(&mut self, now: Instant, ran_for: Duration) -> NextRestart {
        if ran_for >= self.cfg.stable_after {
            self.next = self.cfg.initial;
            self.recent.clear();
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.cfg.crash_loop_window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        // Only the last `crash_loop_restarts` entries matter: memory stays bounded.
        let limit = usize::try_from(self.cfg.crash_loop_restarts).unwrap_or(usize::MAX);
        while self.recent.len() > limit {
            self.recent.pop_front();
        }
        let crash_loop = self.recent.len() >= limit;
        let delay = if crash_loop { self.cfg.max } else { self.next };
        self.next = self.next.saturating_mul(2).min(self.cfg.max);
        NextRestart {
            delay,
            crash_loop,
            recent: self.recent.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(60),
        }
    }

    /// Each step: (seconds since start at exit, seconds it ran) and the expected (delay, crash).
    #[test]
    fn doubling_cap_crash_loop_and_reset() {
        let t0 = Instant::now();
        let mut b = Backoff::new(cfg());
        let steps: &[(u64, u64, u64, bool)] = &[
            (1, 1, 1, false),
            (3, 1, 2, false),
            (6, 1, 4, false),
            (11, 1, 8, false),
            // Fifth restart within 60 s: crash loop, delay at the cap.
            (20, 1, 10, true),
            (31, 1, 10, true),
            // A stable run resets the delay and the crash-loop count.
            (100, 40, 1, false),
            (102, 1, 2, false),
            // Restarts spread out beyond the window never make a crash loop.
            (200, 5, 4, false),
            (300, 5, 8, false),
            (400, 5, 10, false),
            (500, 5, 10, false),
            (600, 5, 10, false),
        ];
        for (i, (at, ran, delay, crash)) in steps.iter().enumerate() {
            let got = b.on_exit(t0 + Duration::from_secs(*at), Duration::from_secs(*ran));
            assert_eq!(
                (got.delay, got.crash_loop),
                (Duration::from_secs(*delay), *crash),
                "step {i}: {got:?}"
            );
        }
    }

    #[test]
    fn crash_loop_ends_when_restarts_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Backoff::new(BackoffConfig {
            crash_loop_restarts: 2,
            crash_loop_window: Duration::from_secs(10),
            ..cfg()
        });
        assert!(!b.on_exit(t0, Duration::ZERO).crash_loop);
        assert!(
            b.on_exit(t0 + Duration::from_secs(1), Duration::ZERO)
                .crash_loop
        );
        let later = b.on_exit(t0 + Duration::from_secs(30), Duration::ZERO);
        assert!(!later.crash_loop);
        assert_eq!(later.recent, 1);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut b = Backoff::new(cfg());
        for i in 0..10_000u64 {
            b.on_exit(t0 + Duration::from_millis(i), Duration::ZERO);
        }
        assert_eq!(b.recent.len(), 5);
    }
}
