//! Protocol conformance: the Autobahn WebSocket cases 1–10, run by kosoku
//! (PyPI, installed by `cargo xtask setup`), against the relay's transport
//! in echo mode (`relay::conformance`). Fails, never skips, without kosoku.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The relay's transport in echo mode on a free port.
async fn start_echo() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        warp::serve(relay::conformance::echo())
            .incoming(listener)
            .run(),
    );
    (addr, server)
}

/// SPEC L7: 0 FAILED and 0 UNCLEAN over the Autobahn cases 1–10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_1_to_10_pass() {
    let (addr, server) = start_echo().await;

    let reports = std::env::temp_dir().join(format!("chat-autobahn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&reports);
    let started = Instant::now();
    let mut kosoku = tokio::process::Command::new("kosoku");
    kosoku
        .args(["-m", "fuzzingclient", "-p", "2", "-o"])
        .arg(&reports);
    // Autobahn numbers its groups 1–7, 9, 10 (there is no group 8).
    for group in [1, 2, 3, 4, 5, 6, 7, 9, 10] {
        kosoku.args(["-i", &format!("{group}.*")]);
    }
    let status = kosoku
        .arg(addr.to_string())
        .status()
        .await
        .expect("kosoku is missing: run `cargo xtask setup` (pip install kosoku)");
    assert!(status.success(), "kosoku failed: {status}");
    let took = started.elapsed();

    let index = std::fs::read_to_string(reports.join("index.json")).expect("kosoku's index.json");
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for (_, cases) in index.as_object().expect("an object of agents") {
        for (case, result) in cases.as_object().expect("an object of cases") {
            for key in ["behavior", "behaviorClose"] {
                let verdict = result[key].as_str().unwrap_or("?").to_string();
                if verdict == "FAILED" || verdict == "UNCLEAN" || verdict == "?" {
                    bad.push(format!("{case} {key} {verdict}"));
                }
                if key == "behavior" {
                    *tally.entry(verdict).or_default() += 1;
                }
            }
        }
    }
    println!("figure: Autobahn 1-10 in {took:?}: {tally:?}");
    server.abort();
    let _ = std::fs::remove_dir_all(&reports);
    assert!(bad.is_empty(), "{} cases not passed: {bad:?}", bad.len());
}

/// A client may send its first frame right behind the upgrade request,
/// without waiting for the 101: hyper reads it together with the request,
/// and the socket must still deliver it first (RFC 6455 §4.1 lets a client
/// do so). One write carries both; the echo must come back whole.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (addr, server) = start_echo().await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut bytes = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    // A masked text frame "early".
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    bytes.extend_from_slice(&[0x81, 0x80 | 5]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"early".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    tcp.write_all(&bytes).await.unwrap();

    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let want = |got: &[u8]| {
        let head = got.windows(4).position(|w| w == b"\r\n\r\n")?;
        let rest = &got[head + 4..];
        (rest.len() >= 7).then(|| (got[..head].to_vec(), rest[..7].to_vec()))
    };
    let (head, frame) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let Some(parts) = want(&got) {
                break parts;
            }
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the echo: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the early frame was never echoed");
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(frame, [&[0x81, 5][..], b"early"].concat());
    server.abort();
}
