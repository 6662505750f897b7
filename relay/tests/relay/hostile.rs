//! Hostile clients (SPEC L1–L7, S3, S4): what an attacker or a broken
//! client can try over HTTP and the WebSocket, and what it gets. Each test
//! prints its figure for docs/RELIABILITY.md.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use shared::protocol::{close_code, ClientMsg, ConversationId, ErrorKind, ServerMsg};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    closed, config, next_error, next_message, open, post, recv, recv_until, send, TestRelay,
};

/// SPEC S4, L1: an expired session and a made-up one are refused (401);
/// tokens are distinct and long (256 bits in base64url).
#[tokio::test]
async fn s4_expired_and_forged_sessions_get_401_and_tokens_are_random() {
    let mut config = config();
    config.session_idle = Duration::from_millis(600);
    let relay = TestRelay::start(config).await;
    let alice = relay.login("alice").await;
    assert_eq!(relay.me_status(&alice).await, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(relay.me_status(&alice).await, 401);
    assert_eq!(relay.upgrade_refusal(&alice).await, Some(401));

    let mut tokens = HashSet::new();
    for _ in 0..20 {
        let token = relay
            .login("alice")
            .await
            .cookie
            .trim_start_matches("chat_session=")
            .to_string();
        assert_eq!(token.len(), 43, "32 bytes in base64url: {token}");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        tokens.insert(token);
    }
    assert_eq!(tokens.len(), 20, "every sign-in gets a new token");
    println!("figure: 20 sign-ins, 20 distinct 256-bit tokens; expired session -> 401");
    relay.stop().await;
}

/// SPEC S5: log out with three tabs open closes all three within a second.
#[tokio::test]
async fn s5_log_out_closes_three_tabs_within_a_second() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(relay.tab(&alice).await.0);
    }
    let started = Instant::now();
    relay
        .http("POST", "/api/logout", &[("Cookie", &alice.cookie)], "")
        .await;
    for tab in &mut tabs {
        assert_eq!(
            closed(tab).await,
            Some(CloseCode::from(close_code::SIGNED_OUT))
        );
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    println!("figure: 3 tabs closed {took:?} after log out");
    relay.stop().await;
}

/// SPEC L2: guessing conversation ids gets nothing, ever.
#[tokio::test]
async fn l2_guessing_conversation_ids_gets_nothing() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let mallory = relay.login("mallory").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (_b, _) = relay.tab(&bob).await;
    let (mut m, _) = relay.tab(&mallory).await;
    let c = open(&mut a, &[&bob]).await;
    post(&mut a, c, 1, "private").await;

    let mut successes = 0;
    for id in 0..200u64 {
        let conversation = ConversationId(id);
        post(&mut m, conversation, id, "guess").await;
        send(&mut m, &ClientMsg::Leave { conversation }).await;
        send(&mut m, &ClientMsg::Typing { conversation }).await;
        for _ in 0..3 {
            match crate::recv_until(&mut m, |msg| match msg {
                ServerMsg::Error { kind, .. } => Some(kind),
                ServerMsg::Message { .. }
                | ServerMsg::Closed { .. }
                | ServerMsg::Started { .. } => Some(ErrorKind::BadFrame),
                _ => None,
            })
            .await
            {
                ErrorKind::NoSuchConversation => {}
                _ => successes += 1,
            }
        }
    }
    assert_eq!(successes, 0);
    println!("figure: 600 guesses over 200 conversation ids, 0 successes");
    relay.stop().await;
}

/// SPEC C4: a 20 KiB message (under the frame cap) gets a clear error and
/// the socket goes on.
#[tokio::test]
async fn l3_oversized_messages_and_frames() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (_b, _) = relay.tab(&bob).await;
    let c = open(&mut a, &[&bob]).await;
    post(&mut a, c, 1, &"x".repeat(20 * 1024)).await;
    assert_eq!(next_error(&mut a).await.0, ErrorKind::MessageTooLong);
    send(&mut a, &ClientMsg::Ping { nonce: 5 }).await;
    assert_eq!(
        crate::recv_until(&mut a, |m| matches!(m, ServerMsg::Pong { .. }).then_some(m)).await,
        ServerMsg::Pong { nonce: 5 }
    );

    println!("figure: 20 KiB message -> message_too_long, the socket answers");
    relay.stop().await;
}

/// SPEC L4: 1,000 messages sent as fast as possible by one user are
/// limited to the burst plus the sustained rate.
#[tokio::test]
async fn l4_a_thousand_messages_at_once_are_rate_limited() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    let c = open(&mut a, &[&bob]).await;
    let started = Instant::now();
    for i in 0..1_000 {
        post(&mut a, c, i, "flood").await;
    }
    let mut delivered = 0u64;
    let mut slowed = 0u64;
    while delivered + slowed < 1_000 {
        match crate::recv_until(&mut a, |m| match m {
            ServerMsg::Message { .. } => Some(true),
            ServerMsg::Error {
                kind: ErrorKind::SlowDown,
                ..
            } => Some(false),
            _ => None,
        })
        .await
        {
            true => delivered += 1,
            false => slowed += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let allowed = 20 + (seconds * 10.0).ceil() as u64;
    assert!(
        delivered <= allowed,
        "{delivered} delivered in {seconds:.1} s"
    );
    assert!(delivered >= 20, "the burst goes through");
    for _ in 0..delivered {
        next_message(&mut b).await;
    }
    crate::quiet(&mut b).await;
    println!("figure: 1000 sent in {seconds:.2} s -> {delivered} delivered, {slowed} slow_down");
    relay.stop().await;
}

/// SPEC L5: 50 tabs of one user: the first 32 are welcomed, the 33rd and
/// later are refused with a clear error and close code 1008.
#[tokio::test]
async fn l5_the_33rd_tab_is_refused() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let mut tabs = Vec::new();
    for _ in 0..32 {
        tabs.push(relay.tab(&alice).await.0);
    }
    let mut refused = 0;
    for _ in 32..50 {
        let mut ws = relay
            .try_connect(Some(&alice), Some(&relay.origin()))
            .await
            .unwrap();
        send(
            &mut ws,
            &ClientMsg::Hello {
                protocol: shared::protocol::PROTOCOL_VERSION,
                resume: vec![],
            },
        )
        .await;
        match recv(&mut ws).await {
            ServerMsg::Error {
                kind: ErrorKind::TooManyConnections,
                message,
                ..
            } => {
                assert!(message.contains("32"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            closed(&mut ws).await,
            Some(CloseCode::from(close_code::POLICY_VIOLATION))
        );
        refused += 1;
    }
    assert_eq!(refused, 18);
    println!("figure: 50 tabs -> 32 welcomed, 18 refused (too_many_connections, 1008)");
    relay.stop().await;
}

/// SPEC L3, L7: 10,000 malformed and random frames: every one answered
/// with a clear error, no panic, and the relay serves on.
#[tokio::test]
async fn l7_ten_thousand_malformed_frames() {
    let relay = TestRelay::start(config()).await;
    // Several accounts in turn: each closed tab is gone before its user's next.
    let mut people = Vec::new();
    for i in 0..8 {
        people.push(relay.login(&format!("fuzzer{i}")).await);
    }
    let alice = people[0].clone();
    let seeds: [&[u8]; 8] = [
        br#"{"type":"send","conversation":1,"client_id":1,"text":"x"}"#,
        br#"{"type":"hello","protocol":3}"#,
        br#"{"type":"open","with":[1,2,3]}"#,
        br#"{"type":"marks","conversation":1,"delivered":1,"read":1}"#,
        b"null",
        b"[]",
        b"{}",
        br#"{"type":"ping","nonce":18446744073709551615}"#,
    ];
    let mut rng = crate::Rng(0x9e37_79b9_7f4a_7c15);
    let mut sent = 0;
    let mut errors = 0;
    let mut round = 0;
    while sent < 10_000 {
        round += 1;
        let (mut ws, _) = relay.tab(&people[round % people.len()]).await;
        // Nine per connection: under the limit of ten a minute.
        for _ in 0..9 {
            let mut frame = seeds[rng.below(seeds.len() as u64) as usize].to_vec();
            for _ in 0..1 + rng.below(4) {
                if frame.is_empty() {
                    frame.push(b'{');
                }
                let at = rng.below(frame.len() as u64) as usize;
                match rng.below(3) {
                    0 => frame[at] = rng.next() as u8,
                    1 => {
                        frame.remove(at);
                    }
                    _ => {
                        let noise = b"{}[]\":,\\\x00\xff";
                        frame.insert(at, noise[rng.below(noise.len() as u64) as usize]);
                    }
                }
            }
            let message = match String::from_utf8(frame) {
                Ok(text) => Message::text(text),
                Err(e) => Message::binary(e.into_bytes()),
            };
            ws.send(message).await.unwrap();
            sent += 1;
        }
        send(&mut ws, &ClientMsg::Ping { nonce: 1 }).await;
        // Some mutants are valid frames (e.g. a ping): count the errors.
        loop {
            match recv(&mut ws).await {
                ServerMsg::Pong { nonce: 1 } => break,
                ServerMsg::Error { .. } => errors += 1,
                _ => {}
            }
        }
        ws.close(None).await.unwrap();
        closed(&mut ws).await;
    }
    assert!(errors > 9_000, "{errors} errors for {sent} frames");
    let (mut ws, _) = relay.tab(&alice).await;
    send(&mut ws, &ClientMsg::Ping { nonce: 2 }).await;
    // The fuzzers' last tabs have just closed, and a mutant may have been a
    // valid `open`: presence and conversation news can come before the pong.
    recv_until(&mut ws, |msg| match msg {
        ServerMsg::Pong { nonce: 2 } => Some(()),
        ServerMsg::Error { kind, message, .. } => panic!("{kind:?}: {message}"),
        _ => None,
    })
    .await;
    println!("figure: {sent} malformed frames -> {errors} error frames, 0 panics, relay serving");
    relay.stop().await;
}

/// SPEC L3: 2 MiB frames close the connection with 1009, and the relay
/// process (a real `relay` binary here, so its memory is its own) does not
/// grow: the frame is refused at 64 KiB, never buffered.
#[tokio::test]
async fn l3_two_mib_frames_close_with_1009_and_relay_memory_stays_put() {
    let (mut child, pid, addr) = crate::bare_relay_process().await;
    let cookie = crate::login_at(addr, "alice").await.cookie;
    let hello = ClientMsg::Hello {
        protocol: shared::protocol::PROTOCOL_VERSION,
        resume: vec![],
    };
    // Warm up (a welcomed tab), then measure.
    let (mut ws, _) = bench::connect(addr, &cookie, &hello).await.unwrap();
    let before = bench::process_usage(pid).0;
    let big = "y".repeat(2 * 1024 * 1024);
    for _ in 0..10 {
        let (mut ws, _) = bench::connect(addr, &cookie, &hello).await.unwrap();
        let _ = ws.send(Message::text(big.clone())).await;
        assert_eq!(
            closed(&mut ws).await,
            Some(CloseCode::from(close_code::MESSAGE_TOO_BIG))
        );
    }
    let after = bench::process_usage(pid).0;
    let grown = after.saturating_sub(before);
    assert!(
        grown < 2 * 1024,
        "the relay grew by {grown} KiB after ten 2 MiB frames"
    );
    send(&mut ws, &ClientMsg::Ping { nonce: 3 }).await;
    assert_eq!(recv(&mut ws).await, ServerMsg::Pong { nonce: 3 });
    println!("figure: ten 2 MiB frames -> ten 1009 closes; relay RSS {before} KiB -> {after} KiB");
    child.kill().await.unwrap();
}
