//! What the tests of every crate share: one poll-with-deadline ([`eventually!`]) and one
//! kubeconfig writer ([`kubeconfig`]).
//!
//! A test that waits for something asynchronous polls for it with a deadline instead of
//! sleeping a fixed time: a passing test is as fast as the system under test, and a loaded
//! machine only makes it slower, not flaky. Every deadline is multiplied by the **patience**
//! of the machine, `EDGEFLEET_TEST_PATIENCE` (a positive number, default 1), as linkerd's
//! integration tests scale theirs by `RUST_TEST_PATIENCE_MS`:
//!
//! ```text
//!   eventually!(probe)                      async: re-evaluates `probe` (which may .await)
//!   eventually!(probe, "what {}", x)          until it is true / Some / Ok, for at most
//!   eventually!(within = d, probe, ...)       d × patience (default PATIENCE × patience)
//!   eventually!(until = instant, probe, ...)  an asserted deadline: never scaled
//!   eventually!(blocking, ...)              the same forms, for synchronous tests
//!
//!   attempt ─ found? ──yes──► the value
//!      │no
//!      ├─ past the deadline? ──yes──► panic: what was awaited, for how long, the last miss
//!      └─ pause (10 ms, ×1.5 each time, at most 100 ms, never past the deadline) ─► attempt
//! ```
//!
//! The probe is an expression evaluated in place on each attempt (no closure), so it may borrow
//! mutably, `.await`, and use `?`. It evaluates to a [`Probe`]: `bool`, `Option<T>` (yields `T`)
//! or `Result<T, E>` (yields `T`; the last `E` is in the failure message). An attempt always
//! happens at the deadline itself, so a condition that holds by then passes. The async form
//! reads `tokio::time`, so tests on a paused clock advance through it at no cost.
//!
//! [`within`](eventually!) is how long a test is willing to wait, which a slow machine may
//! stretch; [`until`](eventually!) is a bound the test asserts (an agent reconnects within
//! its backoff bound), which patience must not stretch.

pub mod kubeconfig;

use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a test waits for something that should happen "soon", before patience. Generous:
/// a passing test is not slowed by it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The environment variable that multiplies every deadline (`EDGEFLEET_TEST_PATIENCE=3`).
pub const PATIENCE_VAR: &str = "EDGEFLEET_TEST_PATIENCE";

/// The first pause between two attempts.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two attempts: the most a probe can lag what it waits for.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// The machine's patience: `EDGEFLEET_TEST_PATIENCE`, or 1.
///
/// # Panics
/// When the variable is set to something other than a positive number: a typo must not
/// silently leave the deadlines as they were.
pub fn patience() -> f64 {
    static PATIENCE_FACTOR: OnceLock<f64> = OnceLock::new();
    *PATIENCE_FACTOR.get_or_init(|| match std::env::var(PATIENCE_VAR) {
        Ok(text) => parse_patience(&text).unwrap_or_else(|| {
            panic!("{PATIENCE_VAR}={text:?}: expected a positive number such as 2 or 1.5")
        }),
        Err(_) => 1.0,
    })
}

fn parse_patience(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f > 0.0)
}

/// `wait` stretched by the machine's [`patience`]: for a wait that is not an `eventually!`
/// (a `tokio::time::timeout` around one future, a child process's start-up).
pub fn patient(wait: Duration) -> Duration {
    wait.mul_f64(patience())
}

/// What a probe of [`eventually!`] evaluates to: found (with a value), or not yet (with what
/// was seen instead, when there is something to say).
pub trait Probe {
    type Found;
    fn found(self) -> Result<Self::Found, Option<String>>;
}

impl Probe for bool {
    type Found = ();
    fn found(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Probe for Option<T> {
    type Found = T;
    fn found(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Probe for Result<T, E> {
    type Found = T;
    fn found(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

/// The state of one poll: its deadline and the next pause. Used by [`eventually!`]; a test
/// has no reason to touch it.
#[doc(hidden)]
pub struct Poll<I> {
    started: I,
    deadline: I,
    pause: Duration,
}

/// The clock a poll reads: `tokio::time::Instant` (async) or `std::time::Instant` (blocking).
#[doc(hidden)]
pub trait Clock: Copy + Ord + std::ops::Add<Duration, Output = Self> {
    fn now() -> Self;
    fn since(self, earlier: Self) -> Duration;
}

impl Clock for tokio::time::Instant {
    fn now() -> Self {
        tokio::time::Instant::now()
    }
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Clock for std::time::Instant {
    fn now() -> Self {
        std::time::Instant::now()
    }
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl<I: Clock> Poll<I> {
    /// A poll that gives up `within` × patience from now.
    pub fn within(within: Duration) -> Self {
        let now = I::now();
        Self::until(now + patient(within))
    }

    /// A poll that gives up at `deadline`, whatever the patience.
    pub fn until(deadline: I) -> Self {
        Poll {
            started: I::now(),
            deadline,
            pause: FIRST_PAUSE,
        }
    }

    /// The pause before the next attempt, or `None` once the deadline has passed (the attempt
    /// just made was the last).
    fn next_pause(&mut self) -> Option<Duration> {
        let now = I::now();
        if now >= self.deadline {
            return None;
        }
        let pause = self.pause.min(self.deadline.since(now));
        // Whole milliseconds: the timer's resolution.
        self.pause = Duration::from_millis(self.pause.as_millis() as u64 * 3 / 2).min(MAX_PAUSE);
        Some(pause)
    }

    /// Fails the test: nothing was found by the deadline.
    pub fn give_up(&self, what: &str, last: Option<String>) -> ! {
        let waited = I::now().since(self.started);
        match last {
            Some(last) => panic!("timed out after {waited:?} waiting for {what}; last: {last}"),
            None => panic!("timed out after {waited:?} waiting for {what}"),
        }
    }
}

impl Poll<tokio::time::Instant> {
    /// Pauses before the next attempt; `false` once the deadline has passed.
    pub async fn pause(&mut self) -> bool {
        match self.next_pause() {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                true
            }
            None => false,
        }
    }
}

impl Poll<std::time::Instant> {
    /// Pauses the thread before the next attempt; `false` once the deadline has passed.
    pub fn pause_blocking(&mut self) -> bool {
        match self.next_pause() {
            Some(pause) => {
                std::thread::sleep(pause);
                true
            }
            None => false,
        }
    }
}

/// Polls a probe until it is found, or fails the test at a deadline (see the [crate] docs).
///
/// ```
/// # async fn example(queue: std::sync::Mutex<Vec<u32>>) {
/// use edgefleet_testkit::eventually;
/// let item = eventually!(queue.lock().unwrap().pop(), "an item in the queue");
/// # }
/// ```
#[macro_export]
macro_rules! eventually {
    // Blocking forms first: `blocking` would otherwise parse as a probe.
    (blocking, within = $within:expr, $probe:expr $(,)?) => {
        $crate::eventually!(@blocking $crate::Poll::<::std::time::Instant>::within($within), $probe, "{}", stringify!($probe))
    };
    (blocking, within = $within:expr, $probe:expr, $($what:tt)+) => {
        $crate::eventually!(@blocking $crate::Poll::<::std::time::Instant>::within($within), $probe, $($what)+)
    };
    (blocking, until = $until:expr, $probe:expr $(,)?) => {
        $crate::eventually!(@blocking $crate::Poll::<::std::time::Instant>::until($until), $probe, "{}", stringify!($probe))
    };
    (blocking, until = $until:expr, $probe:expr, $($what:tt)+) => {
        $crate::eventually!(@blocking $crate::Poll::<::std::time::Instant>::until($until), $probe, $($what)+)
    };
    (blocking, $probe:expr $(,)?) => {
        $crate::eventually!(@blocking $crate::Poll::<::std::time::Instant>::within($crate::PATIENCE), $probe, "{}", stringify!($probe))
    };
    (blocking, $probe:expr, $($what:tt)+) => {
        $crate::eventually!(@blocking $crate::Poll::<::std::time::Instant>::within($crate::PATIENCE), $probe, $($what)+)
    };
    (within = $within:expr, $probe:expr $(,)?) => {
        $crate::eventually!(@async $crate::Poll::<$crate::__tokio::time::Instant>::within($within), $probe, "{}", stringify!($probe))
    };
    (within = $within:expr, $probe:expr, $($what:tt)+) => {
        $crate::eventually!(@async $crate::Poll::<$crate::__tokio::time::Instant>::within($within), $probe, $($what)+)
    };
    (until = $until:expr, $probe:expr $(,)?) => {
        $crate::eventually!(@async $crate::Poll::<$crate::__tokio::time::Instant>::until($until), $probe, "{}", stringify!($probe))
    };
    (until = $until:expr, $probe:expr, $($what:tt)+) => {
        $crate::eventually!(@async $crate::Poll::<$crate::__tokio::time::Instant>::until($until), $probe, $($what)+)
    };
    (@async $poll:expr, $probe:expr, $($what:tt)+) => {
        $crate::eventually!(@poll [pause().await] $poll, $probe, $($what)+)
    };
    (@blocking $poll:expr, $probe:expr, $($what:tt)+) => {
        $crate::eventually!(@poll [pause_blocking()] $poll, $probe, $($what)+)
    };
    (@poll [$($pause:tt)+] $poll:expr, $probe:expr, $($what:tt)+) => {{
        let mut poll = $poll;
        loop {
            // A statement of its own: the probe's temporaries (a lock guard) are dropped
            // before the pause, not held across it.
            let outcome = $crate::Probe::found($probe);
            match outcome {
                ::core::result::Result::Ok(found) => break found,
                ::core::result::Result::Err(last) => {
                    if !poll.$($pause)+ {
                        poll.give_up(&::std::format!($($what)+), last);
                    }
                }
            }
        }
    }};
    ($probe:expr $(,)?) => {
        $crate::eventually!(@async $crate::Poll::<$crate::__tokio::time::Instant>::within($crate::PATIENCE), $probe, "{}", stringify!($probe))
    };
    ($probe:expr, $($what:tt)+) => {
        $crate::eventually!(@async $crate::Poll::<$crate::__tokio::time::Instant>::within($crate::PATIENCE), $probe, $($what)+)
    };
}

/// For [`eventually!`]'s expansion, so callers need no `tokio` of their own.
#[doc(hidden)]
pub use tokio as __tokio;

#[cfg(test)]
mod tests;
