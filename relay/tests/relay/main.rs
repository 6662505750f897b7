//! The relay over real sockets: started on port 0 with an in-memory store,
//! spoken to over HTTP and by real WebSocket clients, each with its own
//! session cookie. Each test names the SPEC ids it covers.
//!
//! One test binary; this file holds the harness and the behaviour tests,
//! and the modules below hold the larger suites.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use relay::Config;
use shared::protocol::{
    close_code, ClientMsg, ClientMsgId, ConversationId, Departure, Ending, ErrorKind, Resume, Seq,
    ServerMsg, User, UserId, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod assets;
mod cluster;
mod conformance;
mod faults;
mod hostile;
mod memory;
mod proxy;
mod signals;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PATIENCE: Duration = Duration::from_secs(5);
const PASSWORD: &str = "correct horse battery";

/// A relay running in this process on a free port.
struct TestRelay {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

/// An HTTP response, read whole.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        json["error"].as_str().unwrap_or_default().to_string()
    }
}

/// One browser: a session cookie.
#[derive(Debug, Clone)]
struct Browser {
    cookie: String,
    user: User,
}

fn config() -> Config {
    let mut config = Config::defaults();
    config.db = ":memory:".into();
    config
}

impl TestRelay {
    async fn start(config: Config) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await
    }

    async fn start_on(listener: TcpListener, config: Config) -> Self {
        // `RUST_LOG=debug cargo test …` shows the relay's logs for one test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
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

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        http(self.addr, method, path, headers, body).await.unwrap()
    }

    async fn login_raw(&self, name: &str, password: &str) -> Response {
        let body = serde_json::json!({ "name": name, "password": password }).to_string();
        self.http(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            &body,
        )
        .await
    }

    /// Signs in (or up) and returns the browser's cookie.
    async fn login(&self, name: &str) -> Browser {
        login_at(self.addr, name).await
    }

    /// The status of `GET /api/me` with this browser's cookie.
    async fn me_status(&self, browser: &Browser) -> u16 {
        let cookie = [("Cookie", browser.cookie.as_str())];
        self.http("GET", "/api/me", &cookie, "").await.status
    }

    /// The status that refused this browser's upgrade from the page's own
    /// origin, or `None` if it was let in.
    async fn upgrade_refusal(&self, browser: &Browser) -> Option<u16> {
        self.try_connect(Some(browser), Some(&self.origin()))
            .await
            .err()
    }

    /// Opens a WebSocket for `browser` (no hello yet).
    async fn try_connect(
        &self,
        browser: Option<&Browser>,
        origin: Option<&str>,
    ) -> Result<Ws, u16> {
        let mut request = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        if let Some(browser) = browser {
            request
                .headers_mut()
                .insert("Cookie", browser.cookie.parse().unwrap());
        }
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// A tab of `browser` that has said hello; returns it with its welcome.
    async fn tab(&self, browser: &Browser) -> (Ws, Welcome) {
        self.tab_resuming(browser, vec![]).await
    }

    async fn tab_resuming(&self, browser: &Browser, resume: Vec<Resume>) -> (Ws, Welcome) {
        let mut ws = self
            .try_connect(Some(browser), Some(&self.origin()))
            .await
            .unwrap();
        send(
            &mut ws,
            &ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                resume,
            },
        )
        .await;
        match recv(&mut ws).await {
            ServerMsg::Welcome {
                me,
                online,
                conversations,
                ..
            } => {
                assert_eq!(me, browser.user);
                (
                    ws,
                    Welcome {
                        online: online.into_iter().map(|u| u.name).collect(),
                        conversations,
                    },
                )
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Fires the shutdown signal; returns once `run` has returned.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        timeout(PATIENCE, &mut self.task)
            .await
            .expect("relay did not shut down")
            .unwrap()
            .unwrap();
    }
}

struct Welcome {
    online: Vec<String>,
    conversations: Vec<shared::protocol::ConversationSnapshot>,
}

/// How long an HTTP exchange may take (generous: tests run on busy machines).
const HTTP_PATIENCE: Duration = Duration::from_secs(20);

/// One HTTP/1.1 exchange with `Connection: close`; an error if there is no
/// connection or no answer.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    timeout(HTTP_PATIENCE, tcp.read_to_string(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, raw.clone()))?;
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The `relay` binary on a free port with an in-memory store, killed when
/// dropped, once it accepts connections: for tests that read the relay's
/// own memory. Returns the child, its pid and its address.
async fn bare_relay_process() -> (tokio::process::Child, u32, SocketAddr) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--db", ":memory:"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not start"
        );
        // A child's readiness cannot be awaited: ask again shortly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, pid, addr)
}

/// Signs in (or up) as `name` with the test password at the relay on `addr`.
async fn login_at(addr: SocketAddr, name: impl AsRef<str>) -> Browser {
    let body = serde_json::json!({ "name": name.as_ref(), "password": PASSWORD }).to_string();
    let headers = [("Content-Type", "application/json")];
    let response = http(addr, "POST", "/api/login", &headers, &body)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let cookie = response.header("set-cookie").unwrap();
    Browser {
        cookie: cookie.split(';').next().unwrap().to_string(),
        user: serde_json::from_str(&response.body).unwrap(),
    }
}

/// A deterministic pseudo-random source (xorshift64*), so that every run
/// sees the same input.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
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

/// The next frame matching `pick`, skipping others; fails after PATIENCE.
async fn recv_until<T>(ws: &mut Ws, mut pick: impl FnMut(ServerMsg) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut skipped = Vec::new();
    loop {
        let Ok(msg) = tokio::time::timeout_at(deadline, recv(ws)).await else {
            panic!("the expected frame did not come; skipped: {skipped:?}");
        };
        match pick(msg.clone()) {
            Some(found) => return found,
            None => skipped.push(msg),
        }
    }
}

async fn next_message(ws: &mut Ws) -> (u64, UserId, String) {
    recv_until(ws, |m| match m {
        ServerMsg::Message { message, .. } => Some((message.seq.0, message.author, message.text)),
        _ => None,
    })
    .await
}

async fn next_error(ws: &mut Ws) -> (ErrorKind, Option<ClientMsgId>) {
    recv_until(ws, |m| match m {
        ServerMsg::Error {
            kind, client_id, ..
        } => Some((kind, client_id)),
        _ => None,
    })
    .await
}

/// Asserts that nothing but pings and presence arrives for a short while.
async fn quiet(ws: &mut Ws) {
    loop {
        match timeout(Duration::from_millis(300), ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Text(text))))
                if matches!(ServerMsg::decode(&text), Ok(ServerMsg::Presence { .. })) => {}
            Ok(other) => panic!("expected silence, got {other:?}"),
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

async fn open(ws: &mut Ws, with: &[&Browser]) -> ConversationId {
    let with = with.iter().map(|b| b.user.id).collect();
    send(ws, &ClientMsg::Open { with }).await;
    recv_until(ws, |m| match m {
        ServerMsg::Opened { conversation } => Some(conversation),
        _ => None,
    })
    .await
}

async fn post(ws: &mut Ws, conversation: ConversationId, client_id: u64, text: &str) {
    let msg = ClientMsg::Send {
        conversation,
        client_id: ClientMsgId(client_id),
        text: text.into(),
    };
    send(ws, &msg).await;
}

async fn wait_for_presence(ws: &mut Ws) -> (Vec<String>, Vec<UserId>) {
    recv_until(ws, |m| match m {
        ServerMsg::Presence { joined, left, .. } if !(joined.is_empty() && left.is_empty()) => {
            Some((joined.into_iter().map(|u| u.name).collect(), left))
        }
        _ => None,
    })
    .await
}

/// What a tab lists once the batch after its welcome has come (SPEC U1,
/// U4): the welcome holds the online users as the last presence batch
/// announced them, and whoever came online since arrives with the next
/// batch. For a tab whose welcome lists nobody: the users who came just
/// before it, named by that batch.
async fn welcome_completed(ws: &mut Ws, welcome: Welcome) -> Vec<String> {
    let mut online = welcome.online;
    if online.is_empty() {
        let (joined, left) = wait_for_presence(ws).await;
        assert!(left.is_empty(), "nobody left");
        online = joined;
    }
    online
}

fn quick() -> Config {
    let mut config = config();
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_timeout = Duration::from_millis(500);
    config.offline_grace = Duration::from_millis(300);
    config
}

// ---------------------------------------------------------------- sign-in

/// SPEC S1, S2, S4, S6: the first sign-in creates the account; the cookie
/// has the right flags; the name keeps its case; later sign-ins need the
/// password; failures change nothing and say why.
#[tokio::test]
async fn s1_s2_s4_sign_up_then_sign_in() {
    let relay = TestRelay::start(config()).await;
    let response = relay.login_raw("Alice_1", PASSWORD).await;
    assert_eq!(response.status, 200);
    let cookie = response.header("set-cookie").unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("chat_session=");
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    let user: User = serde_json::from_str(&response.body).unwrap();
    assert_eq!(user.name, "Alice_1");
    assert!(user.color.starts_with('#'), "{user:?}");

    let again = relay.login_raw("alice_1", PASSWORD).await;
    assert_eq!(again.status, 200, "names are unique ignoring case");
    let same: User = serde_json::from_str(&again.body).unwrap();
    assert_eq!(same, user, "same account, same colour");
    assert_ne!(
        again.header("set-cookie"),
        Some(cookie.as_str()),
        "a new token at every sign-in"
    );

    let wrong = relay.login_raw("ALICE_1", "not the password").await;
    assert_eq!(
        (wrong.status, wrong.error()),
        (401, "Wrong name or password".to_string())
    );

    let bad_name = relay.login_raw("a b", PASSWORD).await;
    assert_eq!(bad_name.status, 400);
    assert!(
        bad_name.error().contains("' ' is not allowed"),
        "{}",
        bad_name.error()
    );
    let short_name = relay.login_raw("ab", PASSWORD).await;
    assert_eq!(short_name.status, 400);
    assert!(short_name.error().contains('3'), "{}", short_name.error());
    let short = relay.login_raw("newcomer", "short").await;
    assert_eq!(short.status, 400);
    assert!(short.error().contains('8'), "{}", short.error());
    // Nothing was created by the failures.
    assert_eq!(relay.login_raw("newcomer", "short").await.status, 400);

    let garbage = relay
        .http(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            "{nope",
        )
        .await;
    assert_eq!(garbage.status, 400);
    relay.stop().await;
}

/// SPEC S3: repeated failures are throttled per name with 429 and Retry-After.
#[tokio::test]
async fn s3_repeated_failures_are_throttled() {
    let relay = TestRelay::start(config()).await;
    relay.login("victim").await;
    for _ in 0..5 {
        assert_eq!(
            relay.login_raw("victim", "wrong password").await.status,
            401
        );
    }
    let throttled = relay.login_raw("victim", PASSWORD).await;
    assert_eq!(throttled.status, 429, "even the right password waits");
    let wait: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    assert!(
        throttled.error().contains("try again"),
        "{}",
        throttled.error()
    );
    // Another name from the same address is not throttled yet.
    assert_eq!(relay.login_raw("bystander", PASSWORD).await.status, 200);
    relay.stop().await;
}

/// SPEC S4, O3: sessions survive a relay restart (same database file).
#[tokio::test]
async fn s4_sessions_survive_a_restart() {
    let db = std::env::temp_dir().join(format!("chat-restart-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let mut config = config();
    config.db = db.clone();
    let relay = TestRelay::start(config.clone()).await;
    let alice = relay.login("alice").await;
    relay.stop().await;

    let relay = TestRelay::start(config).await;
    let me = relay
        .http("GET", "/api/me", &[("Cookie", &alice.cookie)], "")
        .await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(serde_json::from_str::<User>(&me.body).unwrap(), alice.user);
    relay.tab(&alice).await;
    relay.stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// SPEC S5: log out closes every tab of this browser (close code 4001)
/// and nothing else; the cookie no longer works.
#[tokio::test]
async fn s5_log_out_closes_this_browsers_tabs_only() {
    let relay = TestRelay::start(config()).await;
    let laptop = relay.login("alice").await;
    let phone = relay.login("alice").await;
    let (mut tab1, _) = relay.tab(&laptop).await;
    let (mut tab2, _) = relay.tab(&laptop).await;
    let (mut phone_tab, _) = relay.tab(&phone).await;

    let out = relay
        .http("POST", "/api/logout", &[("Cookie", &laptop.cookie)], "")
        .await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let signed_out = Some(CloseCode::from(close_code::SIGNED_OUT));
    assert_eq!(closed(&mut tab1).await, signed_out);
    assert_eq!(closed(&mut tab2).await, signed_out);

    send(&mut phone_tab, &ClientMsg::Ping { nonce: 1 }).await;
    assert_eq!(recv(&mut phone_tab).await, ServerMsg::Pong { nonce: 1 });
    assert_eq!(relay.me_status(&laptop).await, 401);
    assert_eq!(relay.upgrade_refusal(&laptop).await, Some(401));
    relay.stop().await;
}

// ------------------------------------------------------------- admission

/// SPEC L1: the upgrade needs an allowed Origin (403) and a session (401).
#[tokio::test]
async fn l1_origin_and_session_are_checked_before_the_upgrade() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let own = relay.origin();
    for forged in [
        "http://evil.example",
        &format!("{own}.evil.example"),
        "null",
    ] {
        assert_eq!(
            relay.try_connect(Some(&alice), Some(forged)).await.err(),
            Some(403),
            "{forged}"
        );
    }
    assert_eq!(relay.try_connect(Some(&alice), None).await.err(), Some(403));
    assert_eq!(relay.try_connect(None, Some(&own)).await.err(), Some(401));
    let forged = Browser {
        cookie: "chat_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        user: alice.user.clone(),
    };
    assert_eq!(
        relay.try_connect(Some(&forged), Some(&own)).await.err(),
        Some(401)
    );
    assert!(relay.try_connect(Some(&alice), Some(&own)).await.is_ok());
    relay.stop().await;
}

// -------------------------------------------------------------- presence

/// SPEC U1, U4: two users see each other and never themselves; the later
/// one arrives as a presence diff.
#[tokio::test]
async fn u1_two_users_see_each_other_not_themselves() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, welcome) = relay.tab(&alice).await;
    assert!(welcome.online.is_empty());
    let (mut b, welcome) = relay.tab(&bob).await;
    assert_eq!(welcome_completed(&mut b, welcome).await, ["alice"]);
    assert_eq!(
        wait_for_presence(&mut a).await,
        (vec!["bob".to_string()], vec![])
    );
    relay.stop().await;
}

/// SPEC U4: the batch bounds how often presence frames go, not how late a
/// change is: a join after a quiet spell is seen at once, and one within
/// the window of the last frame comes with the next, a window later.
#[tokio::test]
async fn u4_a_join_after_a_quiet_spell_is_seen_at_once_and_the_next_a_window_later() {
    let window = Duration::from_secs(1);
    let mut config = config();
    config.presence_batch = window;
    let relay = TestRelay::start(config).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let carol = relay.login("carol").await;
    let (mut a, _) = relay.tab(&alice).await;
    // Alice's own arrival was the last change announced: let its window pass.
    tokio::time::sleep(window + Duration::from_millis(100)).await;

    let start = tokio::time::Instant::now();
    let _b = relay.tab(&bob).await;
    assert_eq!(
        wait_for_presence(&mut a).await,
        (vec!["bob".to_string()], vec![])
    );
    let first = start.elapsed();
    let _c = relay.tab(&carol).await;
    assert_eq!(
        wait_for_presence(&mut a).await,
        (vec!["carol".to_string()], vec![])
    );
    let second = start.elapsed();
    println!(
        "presence window {} ms: bob seen after {} ms, carol after {} ms",
        window.as_millis(),
        first.as_millis(),
        second.as_millis()
    );
    assert!(
        first < window / 2,
        "bob waited for a beat of the batch: {first:?}"
    );
    assert!(
        second >= first + window - Duration::from_millis(100),
        "two presence frames within one window: {first:?}, {second:?}"
    );
    assert!(
        second <= first + window + Duration::from_millis(500),
        "carol waited longer than the window: {first:?}, {second:?}"
    );
    relay.stop().await;
}

/// SPEC U3, C7: when a user's last tab closes they stay online for the
/// grace period, then go offline for everyone and their dialogs end.
#[tokio::test]
async fn u3_c7_last_tab_closing_means_offline_after_the_grace_and_the_dialog_ends() {
    let relay = TestRelay::start(quick()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    let c = open(&mut a, &[&bob]).await;

    b.close(None).await.unwrap();
    let started = tokio::time::Instant::now();
    // Bob's departure reaches alice twice, in either order: as presence
    // (he left the list) and as the end of their dialog.
    let mut left = None;
    let mut ending = None;
    while left.is_none() || ending.is_none() {
        recv_until(&mut a, |m| match m {
            ServerMsg::Presence { left: l, .. } if !l.is_empty() => {
                left = Some((l, started.elapsed()));
                Some(())
            }
            ServerMsg::Ended {
                conversation,
                ending: e,
            } if conversation == c => {
                ending = Some(e);
                Some(())
            }
            _ => None,
        })
        .await;
    }
    let (left, after) = left.unwrap();
    assert_eq!(left, [bob.user.id]);
    assert!(
        after >= Duration::from_millis(250),
        "left before the grace period: {after:?}"
    );
    assert!(
        after < Duration::from_millis(1300),
        "gone within a second of the grace: {after:?}"
    );
    assert_eq!(
        ending,
        Some(Ending {
            user: bob.user.id,
            reason: Departure::WentOffline
        })
    );
    post(&mut a, c, 1, "anyone?").await;
    assert_eq!(next_error(&mut a).await.0, ErrorKind::ConversationEnded);
    relay.stop().await;
}

/// SPEC U2: a client silent past the heartbeat timeout is dropped; one that
/// answers pings stays.
#[tokio::test]
async fn u2_silent_clients_are_dropped() {
    let relay = TestRelay::start(quick()).await;
    let alice = relay.login("alice").await;
    let (mut lively, _) = relay.tab(&alice).await;
    let (mut silent, _) = relay.tab(&alice).await;
    // The lively one reads (and so answers pings) for three timeouts.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(frame)) = tokio::time::timeout_at(until, lively.next()).await {
        frame.unwrap();
    }
    send(&mut lively, &ClientMsg::Ping { nonce: 3 }).await;
    assert_eq!(
        recv_until(&mut lively, |m| matches!(m, ServerMsg::Pong { .. })
            .then_some(m))
        .await,
        ServerMsg::Pong { nonce: 3 }
    );
    assert_eq!(
        closed(&mut silent).await,
        None,
        "dropped, not closed politely"
    );
    relay.stop().await;
}

// --------------------------------------------------------- conversations

/// SPEC C1, C2, C5: a dialog carries messages both ways, in one order, to
/// every tab of both; the relay stamps author, time and sequence.
#[tokio::test]
async fn c5_a_dialog_carries_messages_both_ways_in_order_to_every_tab() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a1, _) = relay.tab(&alice).await;
    let (mut a2, _) = relay.tab(&alice).await;
    let (mut b1, _) = relay.tab(&bob).await;
    let c = open(&mut a1, &[&bob]).await;
    for ws in [&mut a2, &mut b1] {
        recv_until(ws, |m| matches!(m, ServerMsg::Started { .. }).then_some(())).await;
    }
    for i in 0..10u64 {
        if i.is_multiple_of(2) {
            post(&mut a1, c, i, &format!("m{i}")).await;
        } else {
            post(&mut b1, c, i, &format!("m{i}")).await;
        }
    }
    for ws in [&mut a1, &mut a2, &mut b1] {
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(next_message(ws).await);
        }
        let seqs: Vec<u64> = seen.iter().map(|m| m.0).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        let mut texts: Vec<&str> = seen.iter().map(|m| m.2.as_str()).collect();
        texts.sort();
        assert_eq!(texts.len(), 10);
        for (seq, author, text) in &seen {
            let i: u64 = text[1..].parse().unwrap();
            let expected = if i.is_multiple_of(2) {
                alice.user.id
            } else {
                bob.user.id
            };
            assert_eq!(*author, expected, "seq {seq}");
        }
    }
    relay.stop().await;
}

/// SPEC C2: a tab opened later shows the live conversations with history.
#[tokio::test]
async fn c2_a_later_tab_gets_live_conversations_with_history() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (_b, _) = relay.tab(&bob).await;
    let c = open(&mut a, &[&bob]).await;
    post(&mut a, c, 1, "first").await;
    post(&mut a, c, 2, "second").await;
    next_message(&mut a).await;
    next_message(&mut a).await;
    let (_b2, welcome) = relay.tab(&bob).await;
    assert_eq!(welcome.conversations.len(), 1);
    let texts: Vec<&str> = welcome.conversations[0]
        .messages
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    relay.stop().await;
}

/// SPEC C1: both sides choosing each other at once yields one conversation.
#[tokio::test]
async fn c1_simultaneous_creation_gives_one_conversation() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut a2, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    // Both choose each other at the same moment, and alice double-clicks.
    let to_bob = ClientMsg::Open {
        with: vec![bob.user.id],
    };
    send(&mut a, &to_bob).await;
    send(
        &mut b,
        &ClientMsg::Open {
            with: vec![alice.user.id],
        },
    )
    .await;
    send(&mut a, &to_bob).await;
    let mut ids = Vec::new();
    let mut started = 0;
    for ws in [&mut a, &mut a2, &mut b] {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, ws.next()).await {
            let Message::Text(text) = frame else { continue };
            match ServerMsg::decode(&text).unwrap() {
                ServerMsg::Opened { conversation } => ids.push(conversation),
                ServerMsg::Started { conversation } => {
                    started += 1;
                    ids.push(conversation.id)
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        ids.len(),
        3 + 3,
        "two opened for alice, one for bob, one start per tab"
    );
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one conversation: {ids:?}"
    );
    assert_eq!(started, 3, "each tab heard of it once");
    relay.stop().await;
}

/// SPEC C10, C8: a group of three; one leaves, the others go on; leaving
/// closes it in all the leaver's tabs.
#[tokio::test]
async fn c10_c8_a_group_of_three_and_leaving() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let carol = relay.login("carol").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    let (mut c1, _) = relay.tab(&carol).await;
    let (mut c2, _) = relay.tab(&carol).await;
    let g = open(&mut a, &[&bob, &carol]).await;
    post(&mut c1, g, 1, "hi all").await;
    for ws in [&mut a, &mut b, &mut c2] {
        assert_eq!(next_message(ws).await.2, "hi all");
    }

    send(&mut c2, &ClientMsg::Leave { conversation: g }).await;
    for ws in [&mut c1, &mut c2] {
        recv_until(ws, |m| {
            (m == ServerMsg::Closed { conversation: g }).then_some(())
        })
        .await;
    }
    let departed = ServerMsg::Departed {
        conversation: g,
        user: carol.user.id,
        reason: Departure::Left,
    };
    for ws in [&mut a, &mut b] {
        recv_until(ws, |m| (m == departed).then_some(())).await;
    }
    post(&mut b, g, 2, "just us").await;
    assert_eq!(next_message(&mut a).await.2, "just us");
    quiet(&mut c1).await;

    send(&mut b, &ClientMsg::Leave { conversation: g }).await;
    let ending = recv_until(&mut a, |m| match m {
        ServerMsg::Ended { ending, .. } => Some(ending),
        _ => None,
    })
    .await;
    assert_eq!(
        ending,
        Ending {
            user: bob.user.id,
            reason: Departure::Left
        }
    );
    relay.stop().await;
}

/// SPEC R2, C6: a reconnecting tab gets exactly the missed messages; a
/// resent message is not delivered twice.
#[tokio::test]
async fn r2_c6_resume_gets_exactly_the_missed_messages() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    let c = open(&mut a, &[&bob]).await;
    for i in 1..=3 {
        post(&mut a, c, i, &format!("m{i}")).await;
        next_message(&mut b).await;
    }
    b.close(None).await.unwrap();
    for i in 4..=6 {
        post(&mut a, c, i, &format!("m{i}")).await;
    }
    // A resend of m6 (same client id) is confirmed, not repeated.
    post(&mut a, c, 6, "m6").await;
    for _ in 4..=7 {
        next_message(&mut a).await;
    }
    let resume = vec![Resume {
        conversation: c,
        last_seq: Seq(3),
    }];
    let (_b, welcome) = relay.tab_resuming(&bob, resume).await;
    let snapshot = &welcome.conversations[0];
    let texts: Vec<&str> = snapshot.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m4", "m5", "m6"]);
    assert!(!snapshot.gap);
    relay.stop().await;
}

/// SPEC L2: a non-participant can neither post, read history, close, nor
/// learn that the conversation exists.
#[tokio::test]
async fn l2_non_participants_learn_nothing() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let mallory = relay.login("mallory").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (_b, _) = relay.tab(&bob).await;
    let (mut m, _) = relay.tab(&mallory).await;
    let c = open(&mut a, &[&bob]).await;
    post(&mut a, c, 1, "secret").await;

    post(&mut m, c, 1, "let me in").await;
    assert_eq!(next_error(&mut m).await.0, ErrorKind::NoSuchConversation);
    post(&mut m, ConversationId(c.0 + 99), 2, "guess").await;
    assert_eq!(next_error(&mut m).await.0, ErrorKind::NoSuchConversation);
    send(&mut m, &ClientMsg::Leave { conversation: c }).await;
    assert_eq!(next_error(&mut m).await.0, ErrorKind::NoSuchConversation);
    // Resuming a conversation one is not in reveals nothing either.
    let resume = vec![Resume {
        conversation: c,
        last_seq: Seq(0),
    }];
    let (_m2, welcome) = relay.tab_resuming(&mallory, resume).await;
    assert!(welcome.conversations.is_empty());
    // Mallory only ever saw presence and errors.
    quiet(&mut m).await;
    relay.stop().await;
}

// ---------------------------------------------------------- hostile input

/// SPEC L3, L7: a garbage frame gets an error frame and the connection
/// stays; ten in a minute close it with 1008.
#[tokio::test]
async fn l3_garbage_gets_errors_and_ten_close_the_connection() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let (mut ws, _) = relay.tab(&alice).await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next_error(&mut ws).await.0, ErrorKind::BadFrame);
    send(&mut ws, &ClientMsg::Ping { nonce: 9 }).await;
    assert_eq!(recv(&mut ws).await, ServerMsg::Pong { nonce: 9 });

    for _ in 0..9 {
        ws.send(Message::binary(vec![0u8, 159, 146, 150]))
            .await
            .unwrap();
    }
    for _ in 0..9 {
        assert_eq!(next_error(&mut ws).await.0, ErrorKind::BadFrame);
    }
    assert_eq!(
        closed(&mut ws).await,
        Some(CloseCode::from(close_code::POLICY_VIOLATION))
    );
    relay.stop().await;
}

/// SPEC L3: a frame over 64 KiB closes the connection with 1009.
#[tokio::test]
async fn l3_a_70_kib_frame_closes_with_1009() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let (mut ws, _) = relay.tab(&alice).await;
    let _ = ws.send(Message::text("x".repeat(70 * 1024))).await;
    assert_eq!(
        closed(&mut ws).await,
        Some(CloseCode::from(close_code::MESSAGE_TOO_BIG))
    );
    // The relay is fine.
    relay.tab(&alice).await;
    relay.stop().await;
}

/// SPEC L4: over the rate limit, messages get "slow down" and are not delivered.
#[tokio::test]
async fn l4_rate_limit_says_slow_down() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    let c = open(&mut a, &[&bob]).await;
    for i in 0..30 {
        post(&mut a, c, i, "flood").await;
    }
    let mut delivered = 0;
    let mut slowed = Vec::new();
    for _ in 0..30 {
        match recv_until(&mut a, |m| match m {
            ServerMsg::Message { .. } => Some(None),
            ServerMsg::Error {
                kind, client_id, ..
            } => Some(Some((kind, client_id))),
            _ => None,
        })
        .await
        {
            None => delivered += 1,
            Some(error) => slowed.push(error),
        }
    }
    assert!((20..=22).contains(&delivered), "{delivered}");
    assert!(slowed
        .iter()
        .all(|(k, id)| *k == ErrorKind::SlowDown && id.is_some()));
    for _ in 0..delivered {
        next_message(&mut b).await;
    }
    quiet(&mut b).await;
    relay.stop().await;
}

/// SPEC L6: a client that never reads is dropped while the others'
/// traffic flows.
#[tokio::test]
async fn l6_a_client_that_never_reads_is_dropped_and_slows_no_one() {
    let mut config = config();
    config.outbound_queue = 16;
    config.message_rate = 10_000.0;
    config.message_burst = 10_000.0;
    let relay = TestRelay::start(config).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    let (stalled, _) = relay.tab(&bob).await; // never read again
    let c = open(&mut a, &[&bob]).await;
    // Enough to fill the stalled socket's kernel buffers, then its queue.
    let text = "y".repeat(3_900);
    for i in 0..4_000 {
        post(&mut a, c, i, &text).await;
        let (seq, _, _) = next_message(&mut b).await;
        assert_eq!(seq, i + 1);
        assert_eq!(next_message(&mut a).await.0, i + 1);
    }
    let metrics = relay.http("GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("chat_queue_drops_total 1"), "{metrics}");
    drop(stalled);
    relay.stop().await;
}

// ------------------------------------------------------------ operations

/// SPEC R3: on shutdown every client is told "restarting" (1012) and `run`
/// returns once they are gone; no new connections are accepted.
#[tokio::test]
async fn r3_shutdown_closes_every_socket_with_1012() {
    let relay = TestRelay::start(config()).await;
    let addr = relay.addr;
    let alice = relay.login("alice").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&alice).await;
    let closing = tokio::spawn(async move { (closed(&mut a).await, closed(&mut b).await) });
    relay.stop().await;
    let restart = Some(CloseCode::from(close_code::SERVICE_RESTART));
    assert_eq!(closing.await.unwrap(), (restart, restart));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// SPEC O1, O2: `/healthz`, `/metrics`, the built app at `/` and at the
/// app's own paths, and a 404 for unknown API paths.
#[tokio::test]
async fn o2_health_metrics_and_the_built_app() {
    let dir = std::env::temp_dir().join(format!("chat-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<title>Chat</title>").unwrap();
    std::fs::write(dir.join("app.js"), "console.log(1)").unwrap();
    let mut config = config();
    config.static_dir = dir.clone();
    let relay = TestRelay::start(config).await;

    let get = |path: &'static str| relay.http("GET", path, &[], "");
    assert_eq!(get("/healthz").await.body, r#"{"status":"ok"}"#);
    assert_eq!(get("/").await.body, "<title>Chat</title>");
    assert_eq!(get("/app.js").await.body, "console.log(1)");
    assert_eq!(get("/c/42").await.body, "<title>Chat</title>");
    assert_eq!(get("/api/nothing").await.status, 404);
    assert_eq!(get("/api/me").await.status, 401);

    let alice = relay.login("alice").await;
    let (mut ws, _) = relay.tab(&alice).await;
    ws.send(Message::text("nope")).await.unwrap();
    next_error(&mut ws).await;
    let metrics = get("/metrics").await.body;
    for line in [
        "chat_connections 1",
        "chat_online_users 1",
        "chat_errors_total{kind=\"bad_frame\"} 1",
        "# TYPE chat_messages_relayed_total counter",
    ] {
        assert!(
            metrics.contains(line),
            "/metrics lacks {line:?}:\n{metrics}"
        );
    }
    relay.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Frames before hello, and from another protocol version, get clear errors.
#[tokio::test]
async fn frames_before_hello_or_from_another_protocol_get_clear_errors() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let mut ws = relay
        .try_connect(Some(&alice), Some(&relay.origin()))
        .await
        .unwrap();
    send(&mut ws, &ClientMsg::Ping { nonce: 1 }).await;
    assert_eq!(next_error(&mut ws).await.0, ErrorKind::HelloRequired);
    send(
        &mut ws,
        &ClientMsg::Hello {
            protocol: PROTOCOL_VERSION + 1,
            resume: vec![],
        },
    )
    .await;
    match recv(&mut ws).await {
        ServerMsg::Error {
            kind: ErrorKind::UnsupportedProtocol,
            message,
            ..
        } => {
            assert!(message.contains("reload"), "{message}")
        }
        other => panic!("expected an unsupported-protocol error, got {other:?}"),
    }
    relay.stop().await;
}

/// SPEC O5: passwords and session tokens never appear in the logs, even at
/// debug level.
#[tokio::test]
async fn o5_secrets_never_reach_the_logs() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .finish();
    // This test's runtime runs every relay task on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let relay = TestRelay::start(config()).await;
    let secret = "hunter2-but-longer";
    assert_eq!(relay.login_raw("alice", secret).await.status, 200);
    assert_eq!(
        relay.login_raw("alice", "wrong-password!").await.status,
        401
    );
    let response = relay.login_raw("alice", secret).await;
    let cookie = response
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let alice = Browser {
        cookie: cookie.clone(),
        user: serde_json::from_str(&response.body).unwrap(),
    };
    let (mut ws, _) = relay.tab(&alice).await;
    send(&mut ws, &ClientMsg::Ping { nonce: 1 }).await;
    recv(&mut ws).await;
    relay
        .http("POST", "/api/logout", &[("Cookie", &cookie)], "")
        .await;
    relay.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("signed in"), "the capture works: {logs}");
    let token = cookie.trim_start_matches("chat_session=");
    for secret in [secret, "wrong-password!", token] {
        assert!(!logs.contains(secret), "{secret:?} is in the logs");
    }
}

/// SPEC B1, B2, B4 over the wire: typing reaches the other participant and
/// clears when the message is sent; marks reach the author; activity
/// travels with presence.
#[tokio::test]
async fn b1_b2_b4_typing_marks_and_activity_over_the_wire() {
    let relay = TestRelay::start(config()).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    send(&mut b, &ClientMsg::Activity { active: true }).await;
    let active = recv_until(&mut a, |m| match m {
        ServerMsg::Presence { activity, .. } => activity
            .into_iter()
            .find(|x| x.user == bob.user.id && x.activity == shared::protocol::Activity::Active),
        _ => None,
    })
    .await;
    assert_eq!(active.user, bob.user.id);

    let c = open(&mut a, &[&bob]).await;
    send(&mut a, &ClientMsg::Typing { conversation: c }).await;
    let typing = recv_until(&mut b, |m| match m {
        ServerMsg::Typing { user, active, .. } => Some((user, active)),
        _ => None,
    })
    .await;
    assert_eq!(typing, (alice.user.id, true));
    post(&mut a, c, 1, "hello").await;
    assert_eq!(next_message(&mut b).await.2, "hello");
    let stopped = recv_until(&mut b, |m| match m {
        ServerMsg::Typing { user, active, .. } => Some((user, active)),
        _ => None,
    })
    .await;
    assert_eq!(stopped, (alice.user.id, false));

    send(
        &mut b,
        &ClientMsg::Marks {
            conversation: c,
            delivered: Seq(1),
            read: Seq(1),
        },
    )
    .await;
    let marks = recv_until(&mut a, |m| match m {
        ServerMsg::Marks { marks, .. } => Some(marks),
        _ => None,
    })
    .await;
    assert_eq!(
        (marks.user, marks.delivered, marks.read),
        (bob.user.id, Seq(1), Seq(1))
    );
    relay.stop().await;
}
