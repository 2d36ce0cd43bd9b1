//! The hub's accept-rate limiter: a token bucket with a fair (FIFO) queue of waiters.
//!
//! A bucket holds up to `burst` tokens and gains `rate` per second. Each new tunnel takes one
//! before the hub spends any TLS work on it. Waiters queue on a FIFO mutex: the head sleeps
//! until its token is due, the rest wait behind it, so a storm of 10,000 connections costs one
//! timer, not 10,000 tasks polling the bucket.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Token bucket; see the module docs.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate_per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    /// Takes a token at `now`, or says how long until one is available.
    fn try_take(&mut self, now: Instant, rate_per_second: f64, burst: f64) -> Result<(), Duration> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate_per_second).min(burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate_per_second,
            ))
        }
    }
}

impl TokenBucket {
    /// A full bucket. `rate_per_second` and `burst` are raised to 1 if given as 0, so the hub
    /// can never lock itself out.
    pub(crate) fn new(rate_per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate_per_second: f64::from(rate_per_second.max(1)),
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Waits for a token. Cancel-safe: a waiter dropped while queued takes nothing.
    pub(crate) async fn acquire(&self) {
        let mut bucket = self.state.lock().await;
        loop {
            match bucket.try_take(Instant::now(), self.rate_per_second, self.burst) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_burst_is_free_then_tokens_come_at_the_rate() {
        let bucket = TokenBucket::new(10, 5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..10 {
            bucket.acquire().await;
        }
        // Ten more tokens at 10/s take one second (to float rounding).
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(999) && elapsed <= Duration::from_millis(1001),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_only_up_to_the_burst() {
        let bucket = TokenBucket::new(100, 3);
        for _ in 0..3 {
            bucket.acquire().await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..3 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        bucket.acquire().await;
        assert!(start.elapsed() > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let bucket = std::sync::Arc::new(TokenBucket::new(1, 1));
        bucket.acquire().await;
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (bucket, order) = (bucket.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                bucket.acquire().await;
                order.lock().unwrap().push(i);
            }));
            // Let task `i` queue before task `i + 1` is spawned.
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_takes_no_token() {
        let bucket = TokenBucket::new(1, 1);
        bucket.acquire().await;
        let res = tokio::time::timeout(Duration::from_millis(500), bucket.acquire()).await;
        assert!(res.is_err());
        // The token due at t=1s is still there for the next waiter.
        let start = Instant::now();
        bucket.acquire().await;
        assert!(start.elapsed() <= Duration::from_millis(500));
    }
}
