//! Faults between the pages and the relay (SPEC U2, U3, R2, L6): a network
//! that goes silent, connections cut again and again under traffic, and a
//! tab that stops reading. The network faults come from [`Proxy`], a small
//! TCP proxy in front of the relay.
//!
//! Each test prints its figures; `docs/RELIABILITY.md` keeps them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared::model::{ChatState, Entry};
use shared::protocol::{
    Activity, ChatMessage, ClientMsg, ConversationId, ServerMsg, UserId, PROTOCOL_VERSION,
};
use tokio::sync::{watch, Mutex, MutexGuard};
use tokio::time::{sleep, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::proxy::{Lag, Proxy};
use crate::{
    config, next_message, post, quick, recv, recv_until, send, Browser, TestRelay, Ws, PATIENCE,
};

/// These tests measure time: they run one at a time, so that none is
/// another's background load.
static MEASURING: Mutex<()> = Mutex::const_new(());

async fn alone() -> MutexGuard<'static, ()> {
    MEASURING.lock().await
}

/// Opens a WebSocket for `browser` at `addr` (the relay or a proxy in front
/// of it), as the page served from `addr` would. No hello yet.
async fn connect_to(addr: SocketAddr, browser: &Browser) -> Result<Ws, String> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Origin", format!("http://{addr}").parse().unwrap());
    headers.insert("Cookie", browser.cookie.parse().unwrap());
    match timeout(PATIENCE, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the handshake timed out".into()),
    }
}

/// A greeted tab of `browser` through `addr`.
async fn tab_at(addr: SocketAddr, browser: &Browser) -> Ws {
    let mut ws = connect_to(addr, browser).await.unwrap();
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: vec![],
    };
    send(&mut ws, &hello).await;
    match recv(&mut ws).await {
        ServerMsg::Welcome { .. } => ws,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// One counter of `GET /metrics`, e.g. `metric(&relay, "queue_drops_total")`.
async fn metric(relay: &TestRelay, name: &str) -> u64 {
    let body = relay.http("GET", "/metrics", &[], "").await.body;
    let prefix = format!("chat_{name} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("/metrics lacks chat_{name}:\n{body}"))
        .parse()
        .unwrap()
}

/// When `metric` first reaches `at_least`, polled every 10 ms; `None`
/// once `give_up` is set or PATIENCE has passed.
async fn metric_reaches(
    relay: &TestRelay,
    name: &str,
    at_least: u64,
    give_up: &std::cell::Cell<bool>,
) -> Option<Instant> {
    let deadline = Instant::now() + PATIENCE;
    while !give_up.get() && Instant::now() < deadline {
        if metric(relay, name).await >= at_least {
            return Some(Instant::now());
        }
        sleep(Duration::from_millis(10)).await;
    }
    None
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

// ------------------------------------------------------------- blackhole

/// SPEC U2, U3: a client behind a network that went silent (nothing in
/// either direction, no FIN, no RST) is dropped once the heartbeat timeout
/// passes, and is offline for the others after the grace, not before.
#[tokio::test]
async fn u2_u3_a_blackholed_client_is_dropped_and_offline_after_the_grace() {
    let _alone = alone().await;
    let config = quick();
    let (interval, limit, grace) = (
        config.heartbeat_interval,
        config.heartbeat_timeout,
        config.offline_grace,
    );
    let relay = TestRelay::start(config).await;
    let proxy = Proxy::start(relay.addr).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut b, _) = relay.tab(&bob).await;
    let mut a = tab_at(proxy.addr(), &alice).await;
    // Alice's page reads (so answers the relay's pings) until its socket ends.
    let page = tokio::spawn(async move { while let Some(Ok(_)) = a.next().await {} });
    let is_alice_left = |m: ServerMsg| match m {
        ServerMsg::Presence { left, .. } if left.contains(&alice.user.id) => Some(()),
        _ => None,
    };

    // Through the healthy proxy, alice stays for two heartbeat timeouts.
    let calm = timeout(2 * limit, recv_until(&mut b, is_alice_left)).await;
    assert!(calm.is_err(), "alice left while her pings were answered");
    assert_eq!(metric(&relay, "heartbeat_drops_total").await, 0);

    proxy.blackhole();
    let start = Instant::now();
    let never = std::cell::Cell::new(false);
    let (dropped, left) = tokio::join!(
        metric_reaches(&relay, "heartbeat_drops_total", 1, &never),
        async {
            recv_until(&mut b, is_alice_left).await;
            Instant::now()
        }
    );
    let dropped = dropped.expect("the silent client was never dropped") - start;
    let left = left - start;
    println!(
        "blackhole: dropped after {} ms (interval {} ms, timeout {} ms); \
         offline for bob after {} ms (grace {} ms)",
        millis(dropped),
        millis(interval),
        millis(limit),
        millis(left),
        millis(grace)
    );
    // The last pong reached the relay about one interval before the
    // blackhole (more on a busy machine); polling /metrics adds a little.
    assert!(
        dropped >= limit - 2 * interval,
        "dropped before the timeout: {dropped:?}"
    );
    assert!(
        dropped <= limit + Duration::from_millis(400),
        "not dropped within the timeout: {dropped:?}"
    );
    assert!(
        left >= dropped + grace - Duration::from_millis(50),
        "offline before the grace ended: dropped {dropped:?}, left {left:?}"
    );
    assert!(
        left <= limit + grace + Duration::from_secs(1),
        "not offline within a second of the grace: {left:?}"
    );
    assert_eq!(metric(&relay, "heartbeat_drops_total").await, 1);

    // Healed, alice's page learns its socket is gone and comes back.
    proxy.heal();
    timeout(PATIENCE, page)
        .await
        .expect("the dropped socket stayed open")
        .unwrap();
    let _a = tab_at(proxy.addr(), &alice).await;
    recv_until(&mut b, |m| match m {
        ServerMsg::Presence { joined, .. } if joined.iter().any(|u| u.id == alice.user.id) => {
            Some(())
        }
        _ => None,
    })
    .await;
    relay.stop().await;
}

// ------------------------------------------------------------------- cut

/// SPEC U2, U3: a connection reset in the network is gone at once (the
/// user shows as reconnecting within a presence batch, not after some
/// wait), and the user is offline after the grace.
#[tokio::test]
async fn u2_u3_a_cut_connection_is_gone_at_once_and_offline_after_the_grace() {
    let _alone = alone().await;
    let config = quick();
    let (batch, grace) = (config.presence_batch, config.offline_grace);
    let relay = TestRelay::start(config).await;
    let proxy = Proxy::start(relay.addr).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut b, _) = relay.tab(&bob).await;
    let mut a = tab_at(proxy.addr(), &alice).await;
    let page = tokio::spawn(async move { while let Some(Ok(_)) = a.next().await {} });
    recv_until(&mut b, |m| match m {
        ServerMsg::Presence { joined, .. } if joined.iter().any(|u| u.id == alice.user.id) => {
            Some(())
        }
        _ => None,
    })
    .await;

    proxy.cut();
    let start = Instant::now();
    timeout(PATIENCE, page)
        .await
        .expect("the cut reached the page")
        .unwrap();
    recv_until(&mut b, |m| match m {
        ServerMsg::Presence { activity, .. }
            if activity
                .iter()
                .any(|x| x.user == alice.user.id && x.activity == Activity::Reconnecting) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let gone = start.elapsed();
    recv_until(&mut b, |m| match m {
        ServerMsg::Presence { left, .. } if left.contains(&alice.user.id) => Some(()),
        _ => None,
    })
    .await;
    let left = start.elapsed();
    println!(
        "cut: reconnecting for bob after {} ms (presence batch {} ms); \
         offline after {} ms (grace {} ms)",
        millis(gone),
        millis(batch),
        millis(left),
        millis(grace)
    );
    assert!(
        gone <= 2 * batch + Duration::from_millis(200),
        "the relay noticed the reset late: {gone:?}"
    );
    assert!(
        left >= gone + grace - 2 * batch,
        "offline before the grace ended: reconnecting {gone:?}, left {left:?}"
    );
    assert!(
        left <= grace + Duration::from_secs(1),
        "not offline within a second of the grace: {left:?}"
    );
    relay.stop().await;
}

// ------------------------------------------------------ the total queue

/// Numbered messages each user sends in the cut test.
const NUMBERED: u32 = 1_000;
/// One new message per user this often.
const PACE: Duration = Duration::from_millis(8);
/// Between cuts: 200 ms plus up to this much, drawn from a fixed seed.
const CUT_SPREAD_MS: u64 = 200;
/// After a failed connection attempt, wait this long before the next.
const BACKOFF: Duration = Duration::from_millis(5);
/// What pages send takes 5 ms to reach the relay; what is on its way at a
/// cut arrives 100 ms later on the dead connection, after the page has
/// reconnected and resent it: the resend must not deliver it twice.
const LAG: Lag = Lag {
    latency: Duration::from_millis(5),
    stragglers: Duration::from_millis(100),
};

/// How far a page has got, for the test to wait on.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    composed: u32,
    last_seq: u64,
    pending: usize,
}

/// One user's page as the app runs it: a `ChatState` fed every frame, a
/// hello with resume on every connect, the resends after every welcome,
/// and a steady stream of numbered messages ("a-0001"…) into the dialog.
#[derive(Debug)]
struct Page {
    initial: char,
    browser: Browser,
    model: ChatState,
    dialog: ConversationId,
    composed: u32,
    connects: u32,
    resent: u32,
}

/// How a page's connection ended.
enum Ended {
    Broken,
    Stopped,
}

impl Page {
    /// Types the next numbered message: pending in the model; its frame.
    fn compose(&mut self) -> ClientMsg {
        self.composed += 1;
        let text = format!("{}-{:04}", self.initial, self.composed);
        self.model
            .send(self.dialog, &text)
            .expect("the dialog is live")
    }

    fn progress(&self) -> Progress {
        let c = self.model.conversation(self.dialog).unwrap();
        Progress {
            composed: self.composed,
            last_seq: c.last_seq.0,
            pending: c.pending.len(),
        }
    }

    /// Connects through `addr` again and again until `stop` changes.
    async fn run(
        mut self,
        addr: SocketAddr,
        progress: watch::Sender<Progress>,
        mut stop: watch::Receiver<bool>,
    ) -> Page {
        let mut typing = tokio::time::interval(PACE);
        typing.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let browser = self.browser.clone();
        loop {
            // What is typed while connecting waits in the model as pending.
            let connecting = connect_to(addr, &browser);
            tokio::pin!(connecting);
            let connected = loop {
                tokio::select! {
                    connected = &mut connecting => break connected,
                    _ = typing.tick(), if self.composed < NUMBERED => {
                        self.compose();
                    }
                    _ = stop.changed() => return self,
                }
            };
            let Ok(mut ws) = connected else {
                sleep(BACKOFF).await;
                continue;
            };
            self.connects += 1;
            let ended = self.converse(&mut ws, &mut typing, &progress, &mut stop);
            if let Ended::Stopped = ended.await {
                return self;
            }
        }
    }

    /// One connection: hello, then frames in and numbered messages out,
    /// until the socket breaks or the test stops.
    async fn converse(
        &mut self,
        ws: &mut Ws,
        typing: &mut tokio::time::Interval,
        progress: &watch::Sender<Progress>,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let frame = |msg: &ClientMsg| Message::text(msg.encode());
        if ws.send(frame(&self.model.hello())).await.is_err() {
            return Ended::Broken;
        }
        let mut welcomed = false;
        loop {
            tokio::select! {
                incoming = ws.next() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return Ended::Broken,
                        Some(Ok(_)) => continue,
                    };
                    let msg = ServerMsg::decode(&text).unwrap();
                    let welcome = matches!(msg, ServerMsg::Welcome { .. });
                    self.model.apply(msg);
                    if welcome {
                        welcomed = true;
                        for resend in self.model.resends() {
                            self.resent += 1;
                            if ws.feed(frame(&resend)).await.is_err() {
                                return Ended::Broken;
                            }
                        }
                        if ws.flush().await.is_err() {
                            return Ended::Broken;
                        }
                    }
                    progress.send_replace(self.progress());
                }
                _ = typing.tick(), if self.composed < NUMBERED => {
                    let msg = self.compose();
                    progress.send_replace(self.progress());
                    // Before the welcome it waits for the resends.
                    if welcomed && ws.send(frame(&msg)).await.is_err() {
                        return Ended::Broken;
                    }
                }
                _ = stop.changed() => return Ended::Stopped,
            }
        }
    }
}

/// What one page holds at the end, checked against what was sent.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    delivered: usize,
    lost: usize,
    duplicated: usize,
    reordered: usize,
    misattributed: usize,
}

fn tally(messages: &[ChatMessage], authors: &HashMap<char, UserId>) -> Tally {
    let expected: HashSet<String> = authors
        .keys()
        .flat_map(|initial| (1..=NUMBERED).map(move |n| format!("{initial}-{n:04}")))
        .collect();
    let mut texts = HashSet::new();
    let mut ids = HashSet::new();
    let mut seqs = HashSet::new();
    let mut last_seq = 0;
    let mut last_number: HashMap<UserId, u32> = HashMap::new();
    let (mut duplicated, mut reordered, mut misattributed) = (0, 0, 0);
    for m in messages {
        let fresh_text = texts.insert(m.text.clone());
        let fresh_id = ids.insert((m.author, m.client_id));
        let fresh_seq = seqs.insert(m.seq);
        if !(fresh_text && fresh_id && fresh_seq) {
            duplicated += 1;
            continue;
        }
        let (initial, number) = m.text.split_once('-').unwrap();
        let number: u32 = number.parse().unwrap();
        let initial = initial.chars().next().unwrap();
        if authors.get(&initial) != Some(&m.author) {
            misattributed += 1;
        }
        let last = last_number.entry(m.author).or_default();
        if m.seq.0 <= last_seq || number <= *last {
            reordered += 1;
        }
        last_seq = last_seq.max(m.seq.0);
        *last = (*last).max(number);
    }
    let delivered = expected.intersection(&texts).count();
    Tally {
        delivered,
        lost: expected.len() - delivered,
        duplicated,
        reordered,
        misattributed,
    }
}

/// SPEC R2, C5, C6 under faults: two pages, each driven by the client
/// model, send 1,000 numbered messages each into their dialog while every
/// connection is cut every 200–400 ms; the pages reconnect at once, resume
/// and resend, while what was in flight at each cut still reaches the
/// relay late on the old connection ([`LAG`]). In the end both hold the
/// same 2,000 messages: none lost, none twice, in one order that keeps
/// each author's own order.
#[tokio::test]
async fn r2_c5_c6_a_dialog_under_repeated_cuts_keeps_one_total_order() {
    let _alone = alone().await;
    let mut config = config();
    // 125 messages a second per user, far over the default rate limit.
    config.message_rate = 10_000.0;
    config.message_burst = 10_000.0;
    let relay = TestRelay::start(config).await;
    let proxy = Proxy::start_with(relay.addr, LAG).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;

    // Both pages come online; alice opens the dialog; both models hold it.
    let mut pages = Vec::new();
    for (initial, browser) in [('a', &alice), ('b', &bob)] {
        let mut model = ChatState::new(u64::from(initial) << 32);
        let mut ws = connect_to(proxy.addr(), browser).await.unwrap();
        send(&mut ws, &model.hello()).await;
        model.apply(recv(&mut ws).await);
        pages.push((initial, browser.clone(), model, ws));
    }
    let open = pages[0].2.open(vec![bob.user.id]);
    send(&mut pages[0].3, &open).await;
    let mut dialog = None;
    for (_, _, model, ws) in &mut pages {
        while model.conversations.is_empty() {
            model.apply(recv(ws).await);
        }
        dialog = Some(model.conversations[0].id);
    }
    let dialog = dialog.unwrap();

    let (stop, stopped) = watch::channel(false);
    let mut running = Vec::new();
    let mut watching = Vec::new();
    for (initial, browser, model, ws) in pages {
        drop(ws); // the pages connect afresh, resuming
        let page = Page {
            initial,
            browser,
            model,
            dialog,
            composed: 0,
            connects: 0,
            resent: 0,
        };
        let (progress, watch) = watch::channel(page.progress());
        watching.push(watch);
        running.push(tokio::spawn(page.run(
            proxy.addr(),
            progress,
            stopped.clone(),
        )));
    }

    // Cut every connection every 200–400 ms until both have typed all.
    let mut rng = crate::Rng(0x5eed_cafe_f00d_0001);
    let mut cuts = 0;
    let started = Instant::now();
    let [a_watch, b_watch] = &mut watching[..] else {
        unreachable!()
    };
    let typing_took = {
        let typed = async {
            let _ = a_watch.wait_for(|p| p.composed == NUMBERED).await;
            let _ = b_watch.wait_for(|p| p.composed == NUMBERED).await;
        };
        tokio::pin!(typed);
        loop {
            let pause = Duration::from_millis(200 + rng.below(CUT_SPREAD_MS + 1));
            tokio::select! {
                () = &mut typed => break,
                () = sleep(pause) => {
                    proxy.cut();
                    cuts += 1;
                }
            }
        }
        started.elapsed()
    };

    // The network heals; both pages settle, then stay quiet a while.
    proxy.heal();
    let all = 2 * u64::from(NUMBERED);
    let settled = |p: &Progress| p.last_seq >= all && p.pending == 0;
    let _ = timeout(Duration::from_secs(10), async {
        let _ = a_watch.wait_for(settled).await;
        let _ = b_watch.wait_for(settled).await;
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    stop.send_replace(true);
    let mut ended = Vec::new();
    for page in running {
        ended.push(timeout(PATIENCE, page).await.unwrap().unwrap());
    }

    let stragglers = proxy.stragglers();
    let authors = HashMap::from([('a', alice.user.id), ('b', bob.user.id)]);
    let mut held = Vec::new();
    for page in &ended {
        let c = page.model.conversation(dialog).unwrap();
        let messages: Vec<ChatMessage> = c.messages().cloned().collect();
        let tally = tally(&messages, &authors);
        let notices: Vec<&String> = c
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Notice(n) => Some(n),
                Entry::Message(_) => None,
            })
            .collect();
        println!(
            "cuts, {}'s page: sent {}, delivered {}, lost {}, duplicated {}, reordered {}, \
             misattributed {}, cuts {cuts}, stragglers {stragglers}, connections {}, \
             resent {}, pending {}, typing took {} ms",
            page.initial,
            2 * NUMBERED,
            tally.delivered,
            tally.lost,
            tally.duplicated,
            tally.reordered,
            tally.misattributed,
            page.connects,
            page.resent,
            c.pending.len(),
            millis(typing_took),
        );
        assert_eq!(
            tally,
            Tally {
                delivered: 2 * NUMBERED as usize,
                lost: 0,
                duplicated: 0,
                reordered: 0,
                misattributed: 0,
            },
            "{}'s page",
            page.initial
        );
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq.0).collect();
        assert_eq!(seqs, (1..=all).collect::<Vec<_>>(), "no gaps");
        assert!(notices.is_empty(), "{notices:?}");
        assert!(c.pending.is_empty() && c.is_live());
        assert!(
            page.connects > cuts / 2,
            "the pages reconnected after the cuts: {} connections, {cuts} cuts",
            page.connects
        );
        held.push(messages);
    }
    assert!(cuts >= 10, "too few cuts to mean anything: {cuts}");
    assert!(
        stragglers >= 5,
        "too few late originals to test resends: {stragglers}"
    );
    assert!(held[0] == held[1], "both pages hold the same sequence");
    relay.stop().await;
}

// ------------------------------------------------------------ slow reader

/// Probe messages alice sends to bob in each phase of the slow-reader test.
const PROBES: usize = 500;
/// Messages that flow while bob's third tab stalls.
const FLOOD: usize = 10_000;
/// Texts big enough to fill a stalled tab's socket buffers quickly.
const BIG: usize = 3_900;
/// What the p99 may exceed 1.5× the p99 without the stalled tab by. Other
/// work on the shared 2-core machines moves a p99 several fold between
/// windows a second apart (0.7 ms against 4.9 ms, seen); a stalled reader
/// that held the others up would cost them far more than this.
const NOISE: Duration = Duration::from_millis(10);

/// Alice posts `count` messages one at a time; each one's latency is from
/// her send until bob's tab has it (alice reads her echo too). Returns
/// when each was sent and how long it took.
async fn round_trips(
    a: &mut Ws,
    b: &mut Ws,
    c: ConversationId,
    count: usize,
    seq: &mut u64,
) -> Vec<(Instant, Duration)> {
    let text = "z".repeat(BIG);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        *seq += 1;
        let sent = Instant::now();
        post(a, c, *seq, &text).await;
        assert_eq!(next_message(b).await.0, *seq);
        out.push((sent, sent.elapsed()));
        assert_eq!(next_message(a).await.0, *seq);
    }
    out
}

/// The `pct` percentile (nearest rank) of `samples`.
fn percentile(pct: usize, samples: impl Iterator<Item = Duration>) -> Duration {
    let mut sorted: Vec<Duration> = samples.collect();
    assert!(!sorted.is_empty());
    sorted.sort();
    sorted[(sorted.len() * pct).div_ceil(100) - 1]
}

fn p99(samples: impl Iterator<Item = Duration>) -> Duration {
    percentile(99, samples)
}

/// SPEC L6: a tab that never reads is disconnected once its bounded queue
/// is full, and the others' latency does not suffer meanwhile: the p99 of
/// alice→bob while the stalled tab is there is within 1.5× of the p99
/// without it (or [`NOISE`] above it), measured in the same run: before
/// it comes and after it is gone.
#[tokio::test]
async fn l6_a_stalled_reader_is_dropped_and_the_others_latency_holds() {
    let _alone = alone().await;
    let mut config = config();
    config.message_rate = 1_000_000.0;
    config.message_burst = 1_000_000.0;
    let queue = config.outbound_queue;
    let relay = TestRelay::start(config).await;
    let alice = relay.login("alice").await;
    let bob = relay.login("bob").await;
    let (mut a, _) = relay.tab(&alice).await;
    let (mut b, _) = relay.tab(&bob).await;
    let c = crate::open(&mut a, &[&bob]).await;
    let mut seq = 0;
    // The same /metrics polling runs in both phases, so costs the same.
    let done = std::cell::Cell::new(false);

    let (before, _) = tokio::join!(
        async {
            let r = round_trips(&mut a, &mut b, c, PROBES, &mut seq).await;
            done.set(true);
            r
        },
        metric_reaches(&relay, "queue_drops_total", 1, &done)
    );
    assert_eq!(metric(&relay, "queue_drops_total").await, 0);

    let (mut stalled, _) = relay.tab(&bob).await; // never reads again
    done.set(false);
    let stalled_at = Instant::now();
    let (flood, dropped) = tokio::join!(
        async {
            let r = round_trips(&mut a, &mut b, c, FLOOD, &mut seq).await;
            done.set(true);
            r
        },
        async {
            // Watched until the drop, however long the flood takes.
            loop {
                match metric_reaches(&relay, "queue_drops_total", 1, &done).await {
                    Some(at) => break Some(at),
                    None if done.get() => break None,
                    None => continue,
                }
            }
        }
    );
    let dropped = dropped.expect("the stalled tab was never dropped");
    assert_eq!(metric(&relay, "queue_drops_total").await, 1);

    // Without the stalled tab again, so that background load on the
    // machine weighs on both sides of the comparison.
    done.set(false);
    let (after, _) = tokio::join!(
        async {
            let r = round_trips(&mut a, &mut b, c, PROBES, &mut seq).await;
            done.set(true);
            r
        },
        metric_reaches(&relay, "queue_drops_total", 2, &done)
    );
    assert_eq!(metric(&relay, "queue_drops_total").await, 1);

    // The stalled tab got what its socket buffers held, then the end.
    let mut got = 0;
    loop {
        let frame = timeout(PATIENCE, stalled.next())
            .await
            .expect("the stalled tab's socket stayed open");
        let Some(Ok(frame)) = frame else { break };
        if let Message::Text(text) = frame {
            if matches!(ServerMsg::decode(&text), Ok(ServerMsg::Message { .. })) {
                got += 1;
            }
        }
    }

    let during: Vec<Duration> = flood
        .iter()
        .filter(|(sent, _)| *sent < dropped)
        .map(|(_, d)| *d)
        .collect();
    let without: Vec<Duration> = before.iter().chain(&after).map(|(_, d)| *d).collect();
    let p99_without = p99(without.iter().copied());
    let p99_with = p99(during.iter().copied());
    println!(
        "slow reader: dropped {} ms after it stalled, after {} of {FLOOD} messages; \
         it had received {got} (queue {queue}); alice→bob p99 without {} µs \
         (before {} µs, after {} µs), with the stalled tab {} µs, \
         over the whole flood {} µs",
        millis(dropped - stalled_at),
        during.len(),
        p99_without.as_micros(),
        p99(before.iter().map(|(_, d)| *d)).as_micros(),
        p99(after.iter().map(|(_, d)| *d)).as_micros(),
        p99_with.as_micros(),
        p99(flood.iter().map(|(_, d)| *d)).as_micros(),
    );
    assert!(
        got < FLOOD,
        "the stalled tab was cut off, not fed everything"
    );
    assert!(
        during.len() >= PROBES,
        "fewer than {PROBES} messages flowed while the stalled tab was there"
    );
    let bound = p99_without.mul_f64(1.5).max(p99_without + NOISE);
    println!(
        "slow reader: p99 with / without = {:.2} (bound {} µs); \
         median without {} µs, with {} µs",
        p99_with.as_secs_f64() / p99_without.as_secs_f64(),
        bound.as_micros(),
        percentile(50, without.iter().copied()).as_micros(),
        percentile(50, during.iter().copied()).as_micros(),
    );
    assert!(
        p99_with <= bound,
        "the stalled tab slowed the others: p99 {p99_with:?} against {p99_without:?}"
    );
    relay.stop().await;
}
