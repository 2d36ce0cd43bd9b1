//! Feeds arbitrary bytes — what a client with exec rights, or an edge cluster, can put on an
//! upgraded stream — to the session recorder's WebSocket message splitter, cut where the
//! first byte says: it must never panic, never hold or return more than the recording limit,
//! and yield the same messages however the stream is cut.
#![no_main]

use edgefleet_apiserver::http::websocket_frames::{MessageSplitter, MAX_RECORDED_MESSAGE};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut chunked = MessageSplitter::default();
    let mut messages = Vec::new();
    for chunk in stream.chunks(usize::from(cut).max(1)) {
        messages.extend(chunked.push(chunk));
        assert!(chunked.held_bytes() <= MAX_RECORDED_MESSAGE);
    }
    assert!(messages.iter().all(|m| m.len() <= MAX_RECORDED_MESSAGE));
    let whole = MessageSplitter::default().push(stream);
    assert_eq!(messages, whole);
});
