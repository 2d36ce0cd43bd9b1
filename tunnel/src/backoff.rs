//! Reconnect backoff: exponential ceiling, full jitter.
//!
//! The n-th consecutive failed attempt (n = 0 for the first) waits a uniformly random time in
//! `[0, min(cap, base · 2ⁿ)]`. Full jitter (rather than "ceiling ± 10 %") is what breaks up a
//! reconnect storm: 10,000 agents that lost the hub at the same instant come back spread over
//! the whole window instead of in synchronised waves. With the defaults (250 ms, 30 s) the
//! ceiling reaches the cap after 7 failures, so an agent never waits more than 30 s once the
//! hub answers again.

use std::time::Duration;

use rand::Rng;

use crate::timeouts::{BACKOFF_BASE, BACKOFF_CAP};

/// Exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Ceiling of every delay.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: BACKOFF_BASE,
            cap: BACKOFF_CAP,
        }
    }
}

impl Backoff {
    /// The largest delay after `attempt` consecutive failures: `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2_u32.checked_pow(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random delay in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// [`Backoff::delay`] with a caller-supplied random source (tests pin it).
    pub fn delay_with(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        // Nanosecond resolution; a cap beyond u64 nanoseconds (584 years) saturates.
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling_nanos))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let b = backoff();
        assert_eq!(b.ceiling(0), Duration::from_millis(250));
        assert_eq!(b.ceiling(1), Duration::from_millis(500));
        assert_eq!(b.ceiling(6), Duration::from_secs(16));
        assert_eq!(b.ceiling(7), Duration::from_secs(30));
        assert_eq!(b.ceiling(40), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_use_the_whole_range() {
        let b = backoff();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 0..12 {
            let ceiling = b.ceiling(attempt);
            let delays: Vec<_> = (0..2_000)
                .map(|_| b.delay_with(attempt, &mut rng))
                .collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            // Full jitter: draws land in the bottom and the top tenth of the range alike.
            assert!(
                delays.iter().any(|d| *d < ceiling / 10),
                "attempt {attempt}"
            );
            assert!(
                delays.iter().any(|d| *d > ceiling / 10 * 9),
                "attempt {attempt}"
            );
        }
    }
}
