//! What one connection costs the relay (issue 7): small, bounded socket
//! buffers, and large messages written from their own bytes so that no
//! buffer keeps their size (`relay/src/ws.rs`).

use futures_util::future::join_all;
use shared::protocol::{ClientMsg, ServerMsg, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::{config, next_message, open, post, TestRelay, PATIENCE};

/// Messages in the conversation whose history makes the large welcome.
const HISTORY: usize = 40;
/// Connections held open by the memory test, and how many users hold them
/// (the relay lets a user have 32 tabs).
const CONNECTIONS: usize = 800;
const TABS_PER_USER: usize = 25;
/// Upgrades in flight at once; RSS is sampled after each batch.
const BATCH: usize = 50;
/// The bound per connection. With tungstenite's default buffers (128 KiB
/// read, write buffer as large as the largest batch) a connection costs
/// 150 KiB and more; with the relay's own about 12 KiB.
const MAX_KIB_PER_CONNECTION: f64 = 64.0;

/// A long history arrives as one whole welcome, in one frame on the wire.
#[tokio::test]
async fn a_large_welcome_arrives_whole_in_one_frame() {
    let mut config = config();
    config.message_burst = HISTORY as f64;
    let relay = TestRelay::start(config).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (_b, _) = relay.tab(&bob).await;
    let c = open(&mut a, &[&bob]).await;
    // Two-byte and four-byte characters, so that a cut at a fixed offset
    // would fall inside one.
    let texts: Vec<String> = (0..HISTORY)
        .map(|i| format!("{i} {}", "é🦀x".repeat(500)))
        .collect();
    for (i, text) in texts.iter().enumerate() {
        post(&mut a, c, i as u64 + 1, text).await;
    }
    for _ in 0..HISTORY {
        next_message(&mut a).await;
    }

    // Whole, through a client library.
    let (_b2, welcome) = relay.tab(&bob).await;
    let got: Vec<&str> = welcome.conversations[0]
        .messages
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(got, texts);

    // One frame, on the wire.
    let (frames, text) = raw_welcome(&relay, &bob.cookie).await;
    let ServerMsg::Welcome { conversations, .. } = ServerMsg::decode(&text).unwrap() else {
        panic!("expected a welcome");
    };
    assert_eq!(conversations[0].messages.len(), HISTORY);
    assert!(text.len() > 100 * 1024, "welcome of {} bytes", text.len());
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0].opcode, frames[0].fin), (0x1, true));
    assert_eq!(frames[0].len, text.len());
    println!("figure: welcome of {} bytes in one frame", text.len());
    relay.stop().await;
}

/// One frame as it came over the socket.
#[derive(Debug)]
struct RawFrame {
    opcode: u8,
    fin: bool,
    len: usize,
}

/// Upgrades by hand with `cookie`, says hello, and reads the frames of
/// the first data message (the welcome) off the socket.
async fn raw_welcome(relay: &TestRelay, cookie: &str) -> (Vec<RawFrame>, String) {
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nOrigin: {}\r\n\
         Cookie: {cookie}\r\n\r\n",
        relay.addr,
        relay.origin()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let accept = derive_accept_key(key.as_bytes()).to_ascii_lowercase();
    assert!(
        head.contains(&format!("sec-websocket-accept: {accept}")),
        "{head}"
    );

    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: vec![],
    }
    .encode();
    tcp.write_all(&masked_text_frame(hello.as_bytes()))
        .await
        .unwrap();

    let mut frames = Vec::new();
    let mut message = Vec::new();
    loop {
        let (opcode, fin, payload) = timeout(PATIENCE, read_frame(&mut tcp))
            .await
            .expect("no frame in time");
        if opcode >= 0x8 {
            continue; // a ping is not the welcome
        }
        frames.push(RawFrame {
            opcode,
            fin,
            len: payload.len(),
        });
        message.extend_from_slice(&payload);
        if fin {
            return (frames, String::from_utf8(message).unwrap());
        }
    }
}

/// A client's text frame: final, masked (RFC 6455 §5.3).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// One server frame (unmasked): opcode, FIN and payload.
async fn read_frame(tcp: &mut TcpStream) -> (u8, bool, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => usize::from(tcp.read_u16().await.unwrap()),
        127 => usize::try_from(tcp.read_u64().await.unwrap()).unwrap(),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0F, head[0] & 0x80 != 0, payload)
}

/// Issue 7: idle signed-in connections cost the relay process (the real
/// binary, so its memory is its own) little each: the slope of its RSS
/// over the connections opened stays under [`MAX_KIB_PER_CONNECTION`].
/// tungstenite's default buffers cost well over twice that.
#[tokio::test]
async fn idle_connections_cost_little_memory_each() {
    let (mut child, pid, addr) = crate::bare_relay_process().await;
    let users = CONNECTIONS.div_ceil(TABS_PER_USER);
    let mut cookies = Vec::new();
    for u in 0..users {
        cookies.push(crate::login_at(addr, format!("idle{u}")).await.cookie);
    }
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: vec![],
    };
    // Every user online from the first batches on, so each later welcome
    // lists them all; the slope is taken from there.
    let first_batches = users.div_ceil(BATCH) + 1;
    let mut sockets = Vec::new();
    let mut samples = Vec::new();
    let order: Vec<usize> = (0..CONNECTIONS).collect();
    for (n, batch) in order.chunks(BATCH).enumerate() {
        let opened = join_all(
            batch
                .iter()
                .map(|c| bench::connect(addr, &cookies[c % users], &hello)),
        )
        .await;
        sockets.extend(opened.into_iter().map(|r| r.unwrap().0));
        if n + 1 >= first_batches {
            let rss = bench::process_usage(pid).0;
            samples.push((sockets.len() as f64, rss as f64));
        }
    }
    let per_connection = bench::slope(&samples);
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    println!(
        "figure: {} -> {} idle connections: RSS {} -> {} KiB, {per_connection:.1} KiB per connection",
        first.0, last.0, first.1, last.1
    );
    assert!(
        per_connection < MAX_KIB_PER_CONNECTION,
        "{per_connection:.1} KiB per idle connection"
    );
    drop(sockets);
    child.kill().await.unwrap();
}
