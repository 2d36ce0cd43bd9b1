use std::time::Duration;

use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use super::*;

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        identity_claim: Some("cluster:retail/edge-1".into()),
        bootstrap_token: Some("s3cr3t-token".into()),
        csr_pem: Some("-----BEGIN CERTIFICATE REQUEST-----\n...".into()),
        capabilities: vec![CAPABILITY_EXTENDED_CONNECT.into()],
    }
}

#[test]
fn hello_round_trips_and_reports_its_length() {
    let mut bytes = encode_frame(&hello()).unwrap();
    let frame_len = bytes.len();
    // HTTP/2 bytes following the frame are not the handshake's.
    bytes.extend_from_slice(b"PRI * HTTP/2.0");
    let (decoded, used) = decode_hello(&bytes).unwrap();
    assert_eq!(decoded, hello());
    assert_eq!(used, frame_len);
}

#[test]
fn replies_round_trip_with_their_wire_names() {
    let welcome = HubReply::Welcome(Welcome {
        identity: "cluster:retail/edge-1".into(),
        certificate_chain_pem: None,
        hub_replica: "hub-0".into(),
        keepalive: KeepaliveParams {
            interval_ms: 20_000,
            timeout_ms: 20_000,
        },
    });
    let refused = HubReply::Refused(Refused {
        reason: "bootstrap token already used".into(),
        retry_after_ms: Some(60_000),
    });
    for reply in [welcome, refused] {
        let bytes = encode_frame(&reply).unwrap();
        assert_eq!(decode_reply(&bytes).unwrap().0, reply);
    }
    let json = serde_json::to_value(HubReply::Refused(Refused {
        reason: "expired".into(),
        retry_after_ms: Some(5),
    }))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "refused", "reason": "expired", "retryAfterMs": 5})
    );
}

#[test]
fn debug_output_never_contains_the_token() {
    let printed = format!("{:?}", hello());
    assert!(!printed.contains("s3cr3t-token"), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
}

#[test]
fn unknown_fields_are_ignored_and_missing_optionals_default() {
    let json = br#"{"protocolVersion":1,"future":{"x":[1,2]}}"#;
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(json);
    let (hello, _) = decode_hello(&bytes).unwrap();
    assert_eq!(hello.protocol_version, 1);
    assert_eq!(hello.bootstrap_token, None);
    assert!(hello.capabilities.is_empty());
}

#[test]
fn an_http_request_is_rejected_by_its_length_before_any_allocation() {
    let err = decode_hello(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { len, .. } if len == 0x4745_5420),
        "{err:?}"
    );
}

#[test]
fn empty_truncated_and_non_json_frames_are_errors() {
    assert!(matches!(
        decode_hello(&[0, 0, 0, 0]),
        Err(FrameError::Empty)
    ));
    assert!(matches!(
        decode_hello(&[0, 0]),
        Err(FrameError::Truncated {
            needed: 4,
            available: 2
        })
    ));
    assert!(matches!(
        decode_hello(&[0, 0, 0, 9, b'{']),
        Err(FrameError::Truncated {
            needed: 13,
            available: 5
        })
    ));
    assert!(matches!(
        decode_hello(&[0, 0, 0, 3, b'"', b'x', b'"']),
        Err(FrameError::Json(_))
    ));
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let depth = MAX_HANDSHAKE_FRAME_BYTES / 2 - 4;
    let mut json = "[".repeat(depth);
    json.push_str(&"]".repeat(depth));
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    assert!(matches!(decode_hello(&bytes), Err(FrameError::Json(_))));
}

#[test]
fn an_oversized_message_is_not_encoded() {
    let mut big = hello();
    big.csr_pem = Some("x".repeat(MAX_HANDSHAKE_FRAME_BYTES));
    assert!(matches!(
        encode_frame(&big),
        Err(FrameError::MessageTooLarge { .. })
    ));
}

#[tokio::test]
async fn read_message_leaves_the_bytes_after_the_frame_in_the_stream() {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    write_message(&mut client, &hello()).await.unwrap();
    client.write_all(b"after").await.unwrap();
    let got: Hello = read_message(&mut server).await.unwrap();
    assert_eq!(got, hello());
    let mut rest = [0_u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut server, &mut rest)
        .await
        .unwrap();
    assert_eq!(&rest, b"after");
}

#[tokio::test(start_paused = true)]
async fn a_slow_sender_is_cut_off_by_the_callers_deadline() {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let frame = encode_frame(&hello()).unwrap();
    // Send the prefix and a few bytes, then go quiet while keeping the stream open.
    client.write_all(&frame[..10]).await.unwrap();
    let started = tokio::time::Instant::now();
    let res = tokio::time::timeout(
        crate::timeouts::HANDSHAKE_TIMEOUT,
        read_message::<Hello, _>(&mut server),
    )
    .await;
    assert!(res.is_err(), "the read must time out, got {res:?}");
    assert_eq!(started.elapsed(), crate::timeouts::HANDSHAKE_TIMEOUT);
    drop(client);
}

#[tokio::test]
async fn a_peer_closing_mid_frame_is_an_io_error() {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let frame = encode_frame(&hello()).unwrap();
    client.write_all(&frame[..10]).await.unwrap();
    drop(client);
    let err = read_message::<Hello, _>(&mut server).await.unwrap_err();
    assert!(matches!(err, FrameError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn read_message_refuses_a_huge_length_without_reading_on() {
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        read_message::<Hello, _>(&mut server),
    )
    .await
    .expect("no waiting for a body that is refused anyway")
    .unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
}

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        any::<u32>(),
        ".{0,40}",
        proptest::option::of(".{0,80}"),
        proptest::option::of(".{0,80}"),
        proptest::option::of(".{0,400}"),
        proptest::collection::vec(".{0,20}", 0..5),
    )
        .prop_map(
            |(
                protocol_version,
                agent_version,
                identity_claim,
                bootstrap_token,
                csr_pem,
                capabilities,
            )| {
                Hello {
                    protocol_version,
                    agent_version,
                    identity_claim,
                    bootstrap_token,
                    csr_pem,
                    capabilities,
                }
            },
        )
}

proptest! {
    // The same entry points the fuzz target drives, fed random bytes on every test run.
    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let _ = decode_hello(&bytes);
        let _ = decode_reply(&bytes);
    }

    // Random bytes behind a plausible length prefix reach the JSON parser instead of being
    // turned away by the length check.
    #[test]
    fn decoding_random_payloads_never_panics(payload in proptest::collection::vec(any::<u8>(), 1..2_000)) {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let _ = decode_hello(&bytes);
        let _ = decode_reply(&bytes);
    }

    #[test]
    fn every_hello_round_trips(hello in arb_hello()) {
        let bytes = encode_frame(&hello).unwrap();
        let (decoded, used) = decode_hello(&bytes).unwrap();
        prop_assert_eq!(decoded, hello);
        prop_assert_eq!(used, bytes.len());
    }

    // Any prefix of a valid frame is reported as truncated, never as something else.
    #[test]
    fn every_strict_prefix_is_truncated(hello in arb_hello(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_frame(&hello).unwrap();
        let cut = cut.index(bytes.len());
        let is_truncated = matches!(decode_hello(&bytes[..cut]), Err(FrameError::Truncated { .. }));
        prop_assert!(is_truncated);
    }
}
