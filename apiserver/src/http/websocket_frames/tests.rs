use proptest::prelude::*;

use super::*;

/// One frame as a client (masked) or server (unmasked) sends it.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = header(fin, opcode, payload.len() as u64, mask);
    match mask {
        Some(k) => f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4])),
        None => f.extend_from_slice(payload),
    }
    f
}

/// A frame header announcing `len` payload bytes.
fn header(fin: bool, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match len {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65536 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&n.to_be_bytes());
        }
    }
    if let Some(k) = mask {
        f.extend_from_slice(&k);
    }
    f
}

fn split(stream: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut s = MessageSplitter::default();
    stream
        .chunks(chunk.max(1))
        .flat_map(|c| s.push(c))
        .collect()
}

#[test]
fn splits_masked_fragmented_and_split_input() {
    let mut stream = frame(true, 2, b"\x00ls -l\n", Some([1, 2, 3, 4]));
    stream.extend(frame(true, 9, b"ping", None));
    stream.extend(frame(false, 2, b"\x01hel", None));
    stream.extend(frame(true, 0, b"lo", None));
    let big = vec![7u8; 70_000];
    stream.extend(frame(true, 2, &big, None));
    let messages = split(&stream, 5);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0], b"\x00ls -l\n");
    assert_eq!(messages[1], b"\x01hello");
    assert_eq!(messages[2].len(), 70_000);
}

#[test]
fn a_frame_announcing_two_to_the_sixty_two_bytes_is_skipped_without_being_kept() {
    let mut s = MessageSplitter::default();
    assert!(s
        .push(&header(true, 2, 1 << 62, Some([9, 8, 7, 6])))
        .is_empty());
    let chunk = vec![0x5a; 64 * 1024];
    for _ in 0..(100 * 1024 * 1024 / chunk.len()) {
        assert!(s.push(&chunk).is_empty());
        assert_eq!(
            s.held_bytes(),
            0,
            "the payload of an unrecordable frame is not kept"
        );
    }
}

#[test]
fn a_message_past_the_limit_is_left_out_and_the_next_one_recorded() {
    let limit = MAX_RECORDED_MESSAGE;
    let mut stream = frame(false, 2, &vec![1; limit / 2], None);
    // Together with the first fragment, this one passes the limit.
    stream.extend(frame(true, 0, &vec![2; limit / 2 + 1], None));
    stream.extend(frame(true, 1, b"\x01after", Some([1, 1, 1, 1])));
    let mut s = MessageSplitter::default();
    let mut messages = Vec::new();
    for chunk in stream.chunks(4096) {
        messages.extend(s.push(chunk));
        assert!(s.held_bytes() <= limit, "{} bytes held", s.held_bytes());
    }
    assert_eq!(messages, [b"\x01after".to_vec()]);

    // Exactly the limit is recorded.
    let exact = frame(true, 2, &vec![3; limit], None);
    assert_eq!(split(&exact, 1000), [vec![3; limit]]);
}

#[test]
fn bytes_that_are_not_frames_stop_the_recording() {
    // Opcode 3 is reserved: not WebSocket, so nothing after it is read as frames.
    let mut stream = vec![0x83, 0x01, b'x'];
    stream.extend(frame(true, 2, b"\x01later", None));
    assert!(split(&stream, 2).is_empty());
}

proptest! {
    #[test]
    fn messages_do_not_depend_on_how_the_stream_is_cut(
        frames in proptest::collection::vec(
            (any::<bool>(), prop_oneof![Just(0u8), Just(1), Just(2), Just(8), Just(9), Just(10)],
             proptest::collection::vec(any::<u8>(), 0..300), proptest::option::of(any::<[u8; 4]>())),
            0..12),
        chunk in 1usize..64,
    ) {
        let stream: Vec<u8> = frames
            .iter()
            .flat_map(|(fin, op, payload, mask)| frame(*fin, *op, payload, *mask))
            .collect();
        prop_assert_eq!(split(&stream, chunk), split(&stream, stream.len()));
    }

    #[test]
    fn arbitrary_bytes_never_make_the_splitter_hold_more_than_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..512,
    ) {
        let mut s = MessageSplitter::default();
        for c in bytes.chunks(chunk) {
            for message in s.push(c) {
                prop_assert!(message.len() <= MAX_RECORDED_MESSAGE);
            }
            prop_assert!(s.held_bytes() <= MAX_RECORDED_MESSAGE);
        }
        prop_assert_eq!(split(&bytes, chunk), split(&bytes, bytes.len()));
    }

    #[test]
    fn every_whole_data_message_comes_out_unmasked(
        messages in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..2000), proptest::option::of(any::<[u8; 4]>())),
            0..8),
        chunk in 1usize..700,
    ) {
        let stream: Vec<u8> = messages
            .iter()
            .flat_map(|(payload, mask)| frame(true, 2, payload, *mask))
            .collect();
        let expected: Vec<Vec<u8>> = messages.into_iter().map(|(p, _)| p).collect();
        prop_assert_eq!(split(&stream, chunk), expected);
    }
}
