use std::cell::Cell;
use std::time::Duration;

use super::*;

#[tokio::test(start_paused = true)]
async fn a_probe_is_polled_until_it_is_found_and_its_value_returned() {
    let attempts = Cell::new(0);
    let found = eventually!(
        {
            attempts.set(attempts.get() + 1);
            (attempts.get() == 5).then_some("ready")
        },
        "the fifth attempt"
    );
    assert_eq!((found, attempts.get()), ("ready", 5));
}

#[tokio::test(start_paused = true)]
async fn a_probe_may_await_and_borrow_mutably() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    let mut seen = Vec::new();
    eventually!({
        seen.push(rx.recv().await.unwrap());
        seen.len() == 2
    });
    assert_eq!(seen, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_holds_fails_at_its_deadline_saying_what_it_awaited_and_the_last_miss() {
    let started = tokio::time::Instant::now();
    let outcome = tokio::spawn(async {
        eventually!(
            within = Duration::from_secs(2),
            Err::<(), _>("still 3 replicas"),
            "{} replicas",
            1
        )
    })
    .await;
    let panic = outcome.unwrap_err().into_panic();
    let message = panic.downcast_ref::<String>().unwrap();
    let expected = format!(
        "timed out after {:?} waiting for 1 replicas; last: \"still 3 replicas\"",
        patient(Duration::from_secs(2))
    );
    assert_eq!(*message, expected);
    // Paused clock: exactly the deadline passed, and the last attempt was at it.
    assert_eq!(started.elapsed(), patient(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn a_condition_that_holds_at_the_deadline_itself_passes() {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
    // The pauses (10, 15, 22 ms, ...) do not divide 1000 ms: the last one is cut short so an
    // attempt lands on the deadline.
    eventually!(until = deadline, tokio::time::Instant::now() >= deadline);
    assert_eq!(tokio::time::Instant::now(), deadline);
}

#[tokio::test(start_paused = true)]
async fn pauses_grow_from_ten_milliseconds_to_at_most_a_hundred() {
    let mut poll = Poll::<tokio::time::Instant>::within(Duration::from_secs(60));
    let mut pauses = Vec::new();
    for _ in 0..10 {
        let before = tokio::time::Instant::now();
        assert!(poll.pause().await);
        pauses.push(before.elapsed().as_millis());
    }
    assert_eq!(pauses, [10, 15, 22, 33, 49, 73, 100, 100, 100, 100]);
}

#[test]
fn the_blocking_form_polls_on_the_thread() {
    let started = std::time::Instant::now();
    let elapsed = eventually!(
        blocking,
        (started.elapsed() >= Duration::from_millis(30)).then(|| started.elapsed())
    );
    assert!(elapsed >= Duration::from_millis(30));
    // Pauses are short: the condition is seen within one pause (≤ 100 ms) of becoming true.
    assert!(elapsed < Duration::from_millis(30) + patient(Duration::from_secs(1)));
}

#[test]
fn the_blocking_form_fails_at_its_deadline() {
    let outcome = std::panic::catch_unwind(|| {
        eventually!(blocking, within = Duration::from_millis(50), false, "never")
    });
    let panic = outcome.unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.starts_with("timed out after ") && message.ends_with(" waiting for never"),
        "{message}"
    );
}

#[test]
fn patience_is_a_positive_number() {
    assert_eq!(parse_patience("3"), Some(3.0));
    assert_eq!(parse_patience(" 1.5\n"), Some(1.5));
    for bad in ["", "0", "-2", "fast", "NaN", "inf"] {
        assert_eq!(parse_patience(bad), None, "{bad:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lock_taken_by_the_probe_is_released_during_the_pause() {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let other = queue.clone();
    // Runs during the first pause (one thread): it can only push if the probe let go.
    let pusher = tokio::spawn(async move { other.try_lock().map(|mut q| q.push(7)).is_ok() });
    let item = eventually!(queue.lock().unwrap().pop(), "an item");
    assert_eq!(item, 7);
    assert!(pusher.await.unwrap());
}
