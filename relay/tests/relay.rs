//! The relay over real sockets: started on port 0, spoken to by real
//! WebSocket clients. Each test names the SPEC ids it covers.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use relay::Config;
use shared::protocol::{close_code, ClientMsg, ErrorKind, ServerMsg, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PATIENCE: Duration = Duration::from_secs(5);

/// A relay running in this process on a free port.
struct TestRelay {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestRelay {
    async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay::run(listener, config, async {
            let _ = stopped.await;
        }));
        TestRelay {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .unwrap();
        ws
    }

    /// A connection that has completed the `hello` handshake.
    async fn greeted(&self) -> Ws {
        let mut ws = self.connect().await;
        send(
            &mut ws,
            &ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
            },
        )
        .await;
        assert_eq!(
            recv(&mut ws).await,
            ServerMsg::Welcome {
                protocol: PROTOCOL_VERSION
            }
        );
        ws
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        timeout(PATIENCE, tcp.read_to_string(&mut response))
            .await
            .unwrap()
            .unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Fires the shutdown signal; returns once `run` has returned.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        timeout(PATIENCE, &mut self.task)
            .await
            .expect("relay did not shut down")
            .unwrap();
    }
}

async fn send(ws: &mut Ws, msg: &ClientMsg) {
    ws.send(Message::text(msg.encode())).await.unwrap();
}

/// The next protocol frame, skipping the relay's pings.
async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        let frame = timeout(PATIENCE, ws.next())
            .await
            .expect("no frame in time");
        match frame.expect("socket closed").unwrap() {
            Message::Text(text) => return ServerMsg::decode(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the socket closes; returns the close code, if one came.
async fn closed(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match timeout(PATIENCE, ws.next())
            .await
            .expect("socket stayed open")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

fn kind_of(msg: &ServerMsg) -> Option<ErrorKind> {
    match msg {
        ServerMsg::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

fn quick_heartbeat() -> Config {
    let mut config = Config::defaults();
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_timeout = Duration::from_millis(400);
    config
}

#[tokio::test]
async fn hello_is_welcomed_and_pings_are_answered() {
    let relay = TestRelay::start(Config::defaults()).await;
    let mut ws = relay.greeted().await;
    send(&mut ws, &ClientMsg::Ping { nonce: 42 }).await;
    assert_eq!(recv(&mut ws).await, ServerMsg::Pong { nonce: 42 });
    relay.stop().await;
}

#[tokio::test]
async fn frames_before_hello_or_from_another_protocol_get_clear_errors() {
    let relay = TestRelay::start(Config::defaults()).await;
    let mut ws = relay.connect().await;
    send(&mut ws, &ClientMsg::Ping { nonce: 1 }).await;
    assert_eq!(
        kind_of(&recv(&mut ws).await),
        Some(ErrorKind::HelloRequired)
    );

    send(
        &mut ws,
        &ClientMsg::Hello {
            protocol: PROTOCOL_VERSION + 1,
        },
    )
    .await;
    match recv(&mut ws).await {
        ServerMsg::Error {
            kind: ErrorKind::UnsupportedProtocol,
            message,
        } => {
            assert!(message.contains("reload"), "{message}")
        }
        other => panic!("expected an unsupported-protocol error, got {other:?}"),
    }
    relay.stop().await;
}

/// SPEC L3, L7: garbage gets an error frame naming the problem; the
/// connection stays and goes on working.
#[tokio::test]
async fn garbage_frames_get_error_frames_and_the_connection_stays() {
    let relay = TestRelay::start(Config::defaults()).await;
    let mut ws = relay.greeted().await;

    ws.send(Message::text("{not json")).await.unwrap();
    match recv(&mut ws).await {
        ServerMsg::Error {
            kind: ErrorKind::BadFrame,
            message,
        } => {
            assert!(message.starts_with("invalid frame"), "{message}")
        }
        other => panic!("expected a bad-frame error, got {other:?}"),
    }
    ws.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(kind_of(&recv(&mut ws).await), Some(ErrorKind::BadFrame));

    send(&mut ws, &ClientMsg::Ping { nonce: 9 }).await;
    assert_eq!(recv(&mut ws).await, ServerMsg::Pong { nonce: 9 });
    relay.stop().await;
}

/// SPEC U2: the relay pings; a client that answers stays, one that falls
/// silent past the heartbeat timeout is dropped.
#[tokio::test]
async fn silent_clients_are_dropped_after_the_heartbeat_timeout() {
    let relay = TestRelay::start(quick_heartbeat()).await;
    let mut lively = relay.greeted().await;
    let mut silent = relay.greeted().await;

    // The lively client keeps reading (tungstenite answers pings while it
    // reads) for three timeouts.
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while let Ok(Some(frame)) = tokio::time::timeout_at(until, lively.next()).await {
        if matches!(frame.unwrap(), Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 5, "expected a ping every 100 ms, saw {pings}");
    send(&mut lively, &ClientMsg::Ping { nonce: 3 }).await;
    assert_eq!(recv(&mut lively).await, ServerMsg::Pong { nonce: 3 });

    // The silent one read nothing and answered nothing all that time.
    assert_eq!(
        closed(&mut silent).await,
        None,
        "a silent client is dropped, not closed politely"
    );
    relay.stop().await;
}

/// SPEC R3: on shutdown every client is told "restarting" (1012) and `run`
/// returns once they are gone; no new connections are accepted.
#[tokio::test]
async fn shutdown_closes_every_socket_with_1012() {
    let relay = TestRelay::start(Config::defaults()).await;
    let addr = relay.addr;
    let mut a = relay.greeted().await;
    let mut b = relay.greeted().await;
    let closing = tokio::spawn(async move { (closed(&mut a).await, closed(&mut b).await) });
    relay.stop().await;
    let restart = Some(CloseCode::from(close_code::SERVICE_RESTART));
    assert_eq!(closing.await.unwrap(), (restart, restart));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// SPEC O1, O2: `/healthz`, the built app at `/` and at the app's own
/// paths, and a 404 for unknown API paths.
#[tokio::test]
async fn serves_health_and_the_built_app() {
    let dir = std::env::temp_dir().join(format!("chat-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<title>Chat</title>").unwrap();
    std::fs::write(dir.join("app.js"), "console.log(1)").unwrap();
    let mut config = Config::defaults();
    config.static_dir = dir.clone();
    let relay = TestRelay::start(config).await;

    assert_eq!(
        relay.get("/healthz").await,
        (200, r#"{"status":"ok"}"#.to_string())
    );
    assert_eq!(
        relay.get("/").await,
        (200, "<title>Chat</title>".to_string())
    );
    assert_eq!(
        relay.get("/app.js").await,
        (200, "console.log(1)".to_string())
    );
    assert_eq!(
        relay.get("/c/42").await,
        (200, "<title>Chat</title>".to_string())
    );
    assert_eq!(relay.get("/api/nothing").await.0, 404);

    relay.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
