//! Cluster mode (SPEC O4): several relays sharing one real `redis-server`,
//! which each test starts itself on a free port, in its own folder, with
//! the append-only file on (as docs/DEPLOY.md tells operators to run it).
//! `cargo xtask setup` installs redis-server; without it these tests fail.
//!
//! Relays run in this process (`relay::run` with `--redis`), except where a
//! relay must die by SIGKILL: that one is the `relay` binary. Each test
//! prints its figures.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::signals::{free_addr, RelayProcess, Scratch};
use super::*;

/// How long redis-server may take to start (or to load its file again).
const REDIS_START: Duration = Duration::from_secs(20);
/// Messages in the cross-relay ordering test.
const MESSAGES: u64 = 1000;
/// How long Redis stays away in the restart test.
const OUTAGE: Duration = Duration::from_secs(10);
/// Unconfirmed messages the sender allows itself.
const WINDOW: u64 = 64;
/// Round trips per side in the latency comparison.
const ROUND_TRIPS: usize = 200;

/// A `redis-server` child, killed if it still runs when dropped, with its
/// folder removed.
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    async fn start(name: &str) -> Redis {
        let dir = std::env::temp_dir().join(format!("chat-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_addr().port();
        let mut redis = Redis {
            port,
            dir,
            child: None,
        };
        redis.run().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again) on the same port and folder; returns once
    /// it answers PING, its data loaded.
    async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (`cargo xtask setup` installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + REDIS_START;
        loop {
            let pong: Result<String, String> = async {
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            if pong.as_deref() == Ok("PONG") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within {REDIS_START:?}: {pong:?}"
            );
            // A child's readiness cannot be awaited: ask again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no goodbye, only what the append-only file already holds.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A relay of the cluster on `redis`: short relay TTL and grace, so that
/// deaths show quickly, and no rate limit in the way of the counts.
fn member(redis: &Redis) -> Config {
    let mut config = config();
    config.redis = Some(redis.url());
    config.relay_ttl = Duration::from_secs(1);
    config.offline_grace = Duration::from_millis(300);
    config.message_rate = 1e6;
    config.message_burst = 1e6;
    config
}

/// The `relay` binary's flags for the same settings as [`member`].
fn member_flags(redis: &Redis) -> Vec<String> {
    [
        "--redis",
        &redis.url(),
        "--relay-ttl",
        "1s",
        "--offline-grace",
        "300ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = http(addr, "GET", "/metrics", &[], "").await.unwrap().body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Every message frame until `count` have come, as (seq, text).
async fn messages(ws: &mut Ws, count: u64) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while (got.len() as u64) < count {
        let (seq, _, text) = next_message(ws).await;
        got.push((seq, text));
    }
    got
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// SPEC O4, S1, S4, S5, U1: an account made on A signs in on B; alice on A
/// and bob on B see each other and talk; signing out on A ends the
/// browser's tab on B.
#[tokio::test]
async fn o4_sign_up_on_a_sign_in_on_b_and_talk_across_relays() {
    let redis = Redis::start("accounts").await;
    let a = TestRelay::start(member(&redis)).await;
    let b = TestRelay::start(member(&redis)).await;

    let alice = a.login("alice").await;
    let alice_on_b = b.login("Alice").await;
    assert_eq!(alice_on_b.user, alice.user, "one account across relays");
    let wrong = b.login_raw("ALICE", "not the password").await;
    assert_eq!(wrong.status, 401, "a sign-in, not a second sign-up");
    let bob = b.login("bob").await;
    assert_ne!(bob.user.id, alice.user.id);

    let (mut alice_tab, _) = a.tab(&alice).await;
    let (mut bob_tab, welcome) = b.tab(&bob).await;
    assert_eq!(
        welcome_completed(&mut bob_tab, welcome).await,
        ["alice"],
        "bob on B sees alice on A"
    );
    let (joined, _) = wait_for_presence(&mut alice_tab).await;
    assert_eq!(joined, ["bob"], "alice on A sees bob on B");

    let conversation = open(&mut alice_tab, &[&bob]).await;
    post(&mut alice_tab, conversation, 1, "hello from A").await;
    assert_eq!(next_message(&mut bob_tab).await.2, "hello from A");
    assert_eq!(next_message(&mut alice_tab).await.2, "hello from A");
    post(&mut bob_tab, conversation, 1, "hello from B").await;
    assert_eq!(next_message(&mut bob_tab).await.2, "hello from B");
    let (_, author, text) = next_message(&mut alice_tab).await;
    assert_eq!((author, text.as_str()), (bob.user.id, "hello from B"));

    // alice's second browser has a tab on B; she signs it out through A.
    let (mut second, welcome) = b.tab(&alice_on_b).await;
    assert_eq!(welcome.conversations.len(), 1, "the live dialog, on B too");
    let cookie = [("Cookie", alice_on_b.cookie.as_str())];
    assert_eq!(a.http("POST", "/api/logout", &cookie, "").await.status, 204);
    assert_eq!(
        closed(&mut second).await,
        Some(close_code::SIGNED_OUT.into()),
        "the tab on B closes"
    );
    assert_eq!(b.me_status(&alice_on_b).await, 401, "signed out on B too");
    assert_eq!(a.me_status(&alice).await, 200, "the other browser stays");
    post(&mut alice_tab, conversation, 2, "still here").await;
    assert_eq!(next_message(&mut bob_tab).await.2, "still here");

    a.stop().await;
    b.stop().await;
}

/// SPEC O4, C5, C2: a dialog across relays carries 1,000 messages in
/// order, without loss or duplicates, to every tab of both users on both
/// relays; and the latency across relays against one relay without Redis,
/// measured in the same run.
#[tokio::test]
async fn o4_a_dialog_across_relays_carries_1000_messages_in_order() {
    let redis = Redis::start("order").await;
    let a = TestRelay::start(member(&redis)).await;
    let b = TestRelay::start(member(&redis)).await;
    let alice = a.login("alice").await;
    let bob = b.login("bob").await;
    let (mut alice_a, _) = a.tab(&alice).await;
    let (alice_b, _) = b.tab(&alice).await;
    let (bob_b, _) = b.tab(&bob).await;
    let (bob_a, _) = a.tab(&bob).await;
    let conversation = open(&mut alice_a, &[&bob]).await;

    // Every tab reads as the messages come (a tab that stops reading is
    // dropped, SPEC L6), while alice's first tab sends.
    let readers: Vec<_> = [alice_b, bob_b, bob_a]
        .into_iter()
        .map(|mut tab| {
            tokio::spawn(async move {
                let got = messages(&mut tab, MESSAGES).await;
                (tab, got)
            })
        })
        .collect();
    // At most a window of unconfirmed messages: a burst of 1,000 at once
    // would overflow the readers' queues (SPEC L6), in one relay as in many.
    let sender = tokio::spawn(async move {
        let mut got = Vec::new();
        for n in 0..MESSAGES {
            post(&mut alice_a, conversation, n + 1, &format!("#{n}")).await;
            if n + 1 >= WINDOW {
                got.extend(messages(&mut alice_a, 1).await);
            }
        }
        let rest = MESSAGES - got.len() as u64;
        got.extend(messages(&mut alice_a, rest).await);
        (alice_a, got)
    });
    let mut seen = Vec::new();
    let mut tabs = Vec::new();
    for reader in readers {
        let (tab, got) = reader.await.unwrap();
        tabs.push(tab);
        seen.push(got);
    }
    let (mut alice_a, got) = sender.await.unwrap();
    seen.push(got);
    let [mut alice_b, mut bob_b, mut bob_a]: [Ws; 3] = tabs.try_into().ok().unwrap();
    for tab in &seen {
        let texts: Vec<&str> = tab.iter().map(|(_, t)| t.as_str()).collect();
        let expected: Vec<String> = (0..MESSAGES).map(|n| format!("#{n}")).collect();
        assert_eq!(texts, expected, "every message once, in order");
        assert!(
            tab.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "consecutive sequence numbers"
        );
        assert_eq!(tab, &seen[0], "every tab on both relays agrees");
    }
    println!("cross-relay dialog: {MESSAGES} messages × 4 tabs: lost 0, duplicated 0, reordered 0");

    // Latency: one message at a time, alice → bob, across relays and on
    // a single relay without Redis, interleaved.
    let mut alone_config = config();
    (alone_config.message_rate, alone_config.message_burst) = (1e6, 1e6);
    let single = TestRelay::start(alone_config).await;
    let carol = single.login("carol").await;
    let dave = single.login("dave").await;
    let (mut carol_tab, _) = single.tab(&carol).await;
    let (mut dave_tab, _) = single.tab(&dave).await;
    let single_conversation = open(&mut carol_tab, &[&dave]).await;
    let mut across = Vec::new();
    let mut alone = Vec::new();
    for n in 0..ROUND_TRIPS as u64 {
        let id = MESSAGES + 1 + n;
        let started = Instant::now();
        post(&mut alice_a, conversation, id, "ping").await;
        next_message(&mut bob_b).await;
        across.push(started.elapsed());
        next_message(&mut alice_a).await;
        next_message(&mut alice_b).await;
        next_message(&mut bob_a).await;

        let started = Instant::now();
        post(&mut carol_tab, single_conversation, id, "ping").await;
        next_message(&mut dave_tab).await;
        alone.push(started.elapsed());
        next_message(&mut carol_tab).await;
    }
    across.sort();
    alone.sort();
    let (a50, a99) = (quantile(&across, 0.5), quantile(&across, 0.99));
    let (s50, s99) = (quantile(&alone, 0.5), quantile(&alone, 0.99));
    println!(
        "latency, {ROUND_TRIPS} round trips each: across relays via Redis p50 {a50:?} p99 {a99:?}; \
         one relay without Redis p50 {s50:?} p99 {s99:?}; ratio p50 {:.2}, p99 {:.2}",
        a50.as_secs_f64() / s50.as_secs_f64(),
        a99.as_secs_f64() / s99.as_secs_f64()
    );

    single.stop().await;
    a.stop().await;
    b.stop().await;
}

/// SPEC O4, C1: alice on A and bob on B open their dialog at the same
/// moment (and alice double-clicks): one conversation.
#[tokio::test]
async fn o4_simultaneous_creation_on_two_relays_gives_one_conversation() {
    let redis = Redis::start("create").await;
    let a = TestRelay::start(member(&redis)).await;
    let b = TestRelay::start(member(&redis)).await;
    let alice = a.login("alice").await;
    let bob = b.login("bob").await;
    let (mut on_a, _) = a.tab(&alice).await;
    let (mut on_b, _) = b.tab(&bob).await;
    let to_bob = ClientMsg::Open {
        with: vec![bob.user.id],
    };
    let to_alice = ClientMsg::Open {
        with: vec![alice.user.id],
    };
    tokio::join!(send(&mut on_a, &to_bob), send(&mut on_b, &to_alice));
    send(&mut on_a, &to_bob).await;

    let mut ids: Vec<ConversationId> = Vec::new();
    for (ws, opened) in [(&mut on_a, 2), (&mut on_b, 1)] {
        let mut started = 0;
        let mut got = 0;
        while got < opened || started < 1 {
            match recv(ws).await {
                ServerMsg::Opened { conversation } => {
                    got += 1;
                    ids.push(conversation);
                }
                ServerMsg::Started { conversation } => {
                    started += 1;
                    ids.push(conversation.id);
                }
                _ => {}
            }
        }
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one conversation: {ids:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// SPEC O4, U3, C7: relay B dies by SIGKILL; alice on A sees bob go
/// offline within the relay TTL plus the grace (SPEC: 30 s plus the
/// grace), the dialog ends, and a relay started afterwards sees no ghost.
#[tokio::test]
async fn o4_a_relay_killed_leaves_no_ghosts() {
    let redis = Redis::start("kill").await;
    let a = TestRelay::start(member(&redis)).await;
    let scratch = Scratch::new("cluster-kill");
    let b_addr = free_addr();
    let flags = member_flags(&redis);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut b = RelayProcess::start(b_addr, &scratch, &flags).await;

    let alice = a.login("alice").await;
    let bob = login_at(b_addr, "bob").await;
    let (mut alice_tab, _) = a.tab(&alice).await;
    let mut bob_tab = open_tab_at(b_addr, &bob).await;
    let conversation = open(&mut alice_tab, &[&bob]).await;
    post(&mut bob_tab, conversation, 1, "going down").await;
    assert_eq!(next_message(&mut alice_tab).await.2, "going down");

    let killed = Instant::now();
    b.signal("KILL");
    b.exit(Duration::from_secs(5)).await;
    let bound = Duration::from_secs(30) + Duration::from_millis(300);
    let mut offline = None;
    let mut ended = None;
    while offline.is_none() || ended.is_none() {
        let left = Instant::now() + bound;
        let msg = timeout(
            left.saturating_duration_since(Instant::now()),
            recv(&mut alice_tab),
        )
        .await
        .expect("bob went offline and the dialog ended within 30 s plus the grace");
        match msg {
            ServerMsg::Presence { left, .. } if left.contains(&bob.user.id) => {
                offline = Some(killed.elapsed());
            }
            ServerMsg::Ended {
                conversation: c, ..
            } if c == conversation => {
                ended = Some(killed.elapsed());
            }
            _ => {}
        }
    }
    let (offline, ended) = (offline.unwrap(), ended.unwrap());
    println!(
        "SIGKILL of a relay: its user offline for others after {offline:?}, \
         dialog ended after {ended:?} (TTL 1 s + grace 300 ms; bound 30 s + grace)"
    );
    assert!(offline <= bound && ended <= bound);

    // No ghost: a relay that joins now, and relay A, count alice alone.
    let c = TestRelay::start(member(&redis)).await;
    let (_, welcome) = c.tab(&alice).await;
    assert_eq!(
        welcome.online,
        Vec::<String>::new(),
        "bob is gone for C too"
    );
    assert_eq!(metric(a.addr, "chat_online_users").await, 1);
    c.stop().await;
    a.stop().await;
}

/// SPEC O4: Redis dies (SIGKILL) mid-conversation and comes back: relays
/// report it while it is away, keep their clients connected, and then
/// carry on; every message confirmed before the outage is still there,
/// and the one sent during it arrives.
#[tokio::test]
async fn o4_redis_restarted_mid_conversation_and_the_conversation_goes_on() {
    let mut redis = Redis::start("restart").await;
    let a = TestRelay::start(member(&redis)).await;
    let b = TestRelay::start(member(&redis)).await;
    let alice = a.login("alice").await;
    let bob = b.login("bob").await;
    let (mut alice_tab, _) = a.tab(&alice).await;
    let (mut bob_tab, _) = b.tab(&bob).await;
    let conversation = open(&mut alice_tab, &[&bob]).await;
    for n in 1..=50u64 {
        post(&mut alice_tab, conversation, n, &format!("before {n}")).await;
    }
    let before = messages(&mut alice_tab, 50).await;
    assert_eq!(messages(&mut bob_tab, 50).await, before);

    redis.kill().await;
    let outage = Instant::now();
    // The relay notices and says so; its clients stay connected.
    let degraded = async {
        loop {
            let response = a.http("GET", "/healthz", &[], "").await;
            if response.status == 503 {
                return response.body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let body = timeout(PATIENCE, degraded)
        .await
        .expect("/healthz degrades while Redis is away");
    assert!(body.contains("degraded"), "{body}");
    assert!(metric(a.addr, "chat_redis_errors_total").await > 0);
    assert_eq!(metric(a.addr, "chat_redis_up").await, 0);
    send(&mut alice_tab, &ClientMsg::Ping { nonce: 7 }).await;
    let pong = recv_until(&mut alice_tab, |m| match m {
        ServerMsg::Pong { nonce } => Some(nonce),
        _ => None,
    })
    .await;
    assert_eq!(pong, 7, "heartbeats are answered while Redis is away");
    post(&mut alice_tab, conversation, 51, "during").await;

    // Away for 10 s: ten times the relays' TTL here.
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    redis.run().await;
    println!("Redis away for {:?}", outage.elapsed());
    let (seq, _, text) = next_message(&mut bob_tab).await;
    assert_eq!((seq, text.as_str()), (before[49].0 + 1, "during"));
    assert_eq!(next_message(&mut alice_tab).await.2, "during");
    post(&mut bob_tab, conversation, 2, "after").await;
    assert_eq!(next_message(&mut alice_tab).await.2, "after");
    let healthy = async {
        while a.http("GET", "/healthz", &[], "").await.status != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(PATIENCE, healthy).await.expect("/healthz recovers");

    // Nothing confirmed before the outage is lost: a new tab on either
    // relay gets the whole history, in order.
    for relay in [&a, &b] {
        let (_, welcome) = relay.tab(&bob).await;
        let history: Vec<String> = welcome.conversations[0]
            .messages
            .iter()
            .map(|m| m.text.clone())
            .collect();
        let mut expected: Vec<String> = (1..=50).map(|n| format!("before {n}")).collect();
        expected.extend(["during".to_string(), "after".to_string()]);
        assert_eq!(history, expected);
    }
    assert_eq!(metric(a.addr, "chat_online_users").await, 2, "no one lost");
    a.stop().await;
    b.stop().await;
}

/// A tab of `browser` on the relay at `addr`, greeted.
async fn open_tab_at(addr: SocketAddr, browser: &Browser) -> Ws {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", format!("http://{addr}").parse().unwrap());
    request
        .headers_mut()
        .insert("Cookie", browser.cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut ws,
        &ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            resume: vec![],
        },
    )
    .await;
    recv_until(&mut ws, |m| {
        matches!(m, ServerMsg::Welcome { .. }).then_some(())
    })
    .await;
    ws
}

/// SPEC O4: the log stays bounded: the leader writes snapshots and trims
/// the log behind them, and a relay that joins afterwards starts from the
/// snapshot with the same users, conversations and history as the others.
#[tokio::test]
async fn o4_snapshots_bound_the_log_and_a_late_relay_starts_from_one() {
    let redis = Redis::start("snapshot").await;
    let mut config = member(&redis);
    config.snapshot_interval = Duration::from_millis(200);
    config.log_retention = Duration::ZERO;
    let a = TestRelay::start(config.clone()).await;
    let b = TestRelay::start(config.clone()).await;
    let alice = a.login("alice").await;
    let bob = b.login("bob").await;
    let (mut alice_tab, _) = a.tab(&alice).await;
    let (mut bob_tab, _) = b.tab(&bob).await;
    let conversation = open(&mut alice_tab, &[&bob]).await;
    for n in 1..=20u64 {
        post(&mut alice_tab, conversation, n, &format!("early {n}")).await;
    }
    let early = messages(&mut bob_tab, 20).await;
    messages(&mut alice_tab, 20).await;

    // Ticks alone append ten entries a second; the log must not keep them.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let length: u64 = redis::cmd("XLEN")
        .arg("chat:log")
        .query_async(&mut conn)
        .await
        .unwrap();
    let snapshot: Option<String> = redis::cmd("GET")
        .arg("chat:snapshot")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(snapshot.is_some(), "the leader wrote a snapshot");
    println!("log entries kept after 2 s with snapshots every 200 ms: {length}");
    assert!(
        length < 20,
        "the log was trimmed behind the snapshot: {length} entries"
    );

    let c = TestRelay::start(config).await;
    let (mut bob_on_c, welcome) = c.tab(&bob).await;
    assert_eq!(welcome.online, ["alice"]);
    let history: Vec<(u64, String)> = welcome.conversations[0]
        .messages
        .iter()
        .map(|m| (m.seq.0, m.text.clone()))
        .collect();
    assert_eq!(history, early, "the late relay holds the same history");
    post(&mut bob_on_c, conversation, 100, "from C").await;
    let (seq, _, text) = next_message(&mut alice_tab).await;
    assert_eq!((seq, text.as_str()), (early[19].0 + 1, "from C"));
    assert_eq!(next_message(&mut bob_tab).await.2, "from C");
    c.stop().await;
    a.stop().await;
    b.stop().await;
}

/// SPEC O4, S3: failed sign-ins count across relays: guesses spread over
/// A and B are throttled as on one relay, and a success forgets the
/// name's failures everywhere.
#[tokio::test]
async fn o4_s3_failed_sign_ins_count_across_relays() {
    let redis = Redis::start("throttle").await;
    let a = TestRelay::start(member(&redis)).await;
    let b = TestRelay::start(member(&redis)).await;
    a.login("victim").await;
    for relay in [&a, &b, &a, &b] {
        assert_eq!(
            relay.login_raw("victim", "wrong password").await.status,
            401
        );
    }
    assert_eq!(
        b.login_raw("Victim", PASSWORD).await.status,
        200,
        "four failures: not throttled yet, and a success resets the name"
    );
    for relay in [&b, &a, &b, &a, &b] {
        assert_eq!(
            relay.login_raw("victim", "wrong password").await.status,
            401
        );
    }
    for relay in [&a, &b] {
        let throttled = relay.login_raw("victim", PASSWORD).await;
        assert_eq!(throttled.status, 429, "five failures over two relays");
        let wait: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=900).contains(&wait), "{wait}");
    }
    assert_eq!(a.login_raw("bystander", PASSWORD).await.status, 200);
    a.stop().await;
    b.stop().await;
}
