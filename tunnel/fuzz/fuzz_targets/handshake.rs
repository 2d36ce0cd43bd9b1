//! Feeds arbitrary bytes to the handshake frame decoders: they must return a value or an
//! error, never panic, and never allocate beyond the frame limit.
#![no_main]

use edgefleet_tunnel::handshake::{decode_hello, decode_reply, MAX_HANDSHAKE_FRAME_BYTES};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for decoded_len in [
        decode_hello(data).ok().map(|(_, len)| len),
        decode_reply(data).ok().map(|(_, len)| len),
    ]
    .into_iter()
    .flatten()
    {
        assert!(decoded_len <= 4 + MAX_HANDSHAKE_FRAME_BYTES && decoded_len <= data.len());
    }
});
