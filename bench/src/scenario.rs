//! The benchmark scenarios, each run against one server by the `load`
//! binary, each answering one JSON object (the figures `cargo xtask bench`
//! puts into BENCHMARKS.md).
//!
//! - [`idle`]: N idle sockets; connect rate and resident memory per socket.
//! - [`dialogs`]: pairs exchanging 100-byte messages, either as fast as a
//!   window of messages in flight allows (throughput), or at a fixed rate
//!   (latency, measured from each message's *intended* send time, so a
//!   stalled server cannot hide its stall: no coordinated omission).
//! - [`presence`]: how fast every online user learns of a burst of users
//!   joining, and how many presence frames that costs each: the relay, or
//!   the floor's presence route (`bench::floor::presence`) as its baseline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{instant_at, now_nanos, read_stamp, Account, Client, Target};
use crate::process_usage;

/// Sockets being set up at once.
pub const CONNECT_CONCURRENCY: usize = 128;
/// Pause after each idle checkpoint before memory is read (`--settle`).
pub const SETTLE: Duration = Duration::from_secs(2);
/// How long a fixed-rate run waits for messages still in flight (`--drain`).
pub const DRAIN: Duration = Duration::from_secs(2);

/// A latency histogram in nanoseconds, from 1 ns to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn quantiles_ms(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    json!({
        "count": h.len(),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1e6,
    })
}

/// The server process's CPU time so far (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Connects client `index` of `target`, retrying a failed attempt twice.
async fn connect_one(
    target: Target,
    server: SocketAddr,
    index: usize,
    account: Option<&Account>,
) -> Result<Client> {
    retrying(|| Client::connect(target, server, index, account)).await
}

/// Up to three tries of a socket's set-up, 100 ms and then 200 ms apart;
/// the last error if none succeeds.
async fn retrying<T, F: std::future::Future<Output = Result<T>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T> {
    let mut last = None;
    for attempt_no in 0..3 {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100 << attempt_no)).await;
            }
        }
    }
    Err(last.expect("three attempts were made"))
}

/// Idle: connects up to each checkpoint in turn, `CONNECT_CONCURRENCY` at
/// a time, and reads the server's memory once each checkpoint has settled.
/// Chat clients are tabs of `accounts` round-robin (every user comes online
/// with the first tabs), each signed in and greeted.
pub async fn idle(
    target: Target,
    server: SocketAddr,
    pid: u32,
    checkpoints: &[usize],
    accounts: &[Account],
    settle: Duration,
) -> Result<Value> {
    let (stop_tx, stop) = watch::channel(false);
    let connected = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut sockets = JoinSet::new();
    let (rss_before, _) = process_usage(pid);
    let mut samples = Vec::new();
    let mut connecting = Duration::ZERO;
    let mut started = 0;
    for &checkpoint in checkpoints {
        let began = Instant::now();
        for index in started..checkpoint {
            let account = (!accounts.is_empty()).then(|| accounts[index % accounts.len()].clone());
            let (gate, connected, mut stop) = (gate.clone(), connected.clone(), stop.clone());
            sockets.spawn(async move {
                let permit = gate.acquire_owned().await?;
                let mut client = connect_one(target, server, index, account.as_ref()).await?;
                drop(permit);
                connected.fetch_add(1, Ordering::Relaxed);
                // Idle: read what comes (presence, pings) until told to stop.
                loop {
                    tokio::select! {
                        frame = client.ws.next() => match frame {
                            Some(Ok(Message::Text(text))) => {
                                if let Some(answer) = client.answer(text.as_str()) {
                                    client.ws.send(answer).await?;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => bail!("socket {index} was closed while idle"),
                        },
                        _ = stop.changed() => return anyhow::Ok(()),
                    }
                }
            });
        }
        started = checkpoint;
        while connected.load(Ordering::Relaxed) < checkpoint {
            if let Some(Ok(Err(e)) | Err(e)) = sockets
                .try_join_next()
                .map(|r| r.map_err(anyhow::Error::from))
            {
                return Err(e.context(format!(
                    "{} of {checkpoint} sockets connected",
                    connected.load(Ordering::Relaxed)
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        connecting += began.elapsed();
        tokio::time::sleep(settle).await;
        let (rss, fds) = process_usage(pid);
        eprintln!("    {checkpoint} sockets: {rss} KiB, {fds} open files");
        samples.push(json!({
            "sockets": checkpoint,
            "rss_kib": rss,
            "per_socket_kib": (rss.saturating_sub(rss_before)) as f64 / checkpoint as f64,
        }));
    }
    let total = checkpoints.last().copied().unwrap_or(0);
    let (rss_after, _) = process_usage(pid);
    stop_tx.send_replace(true);
    while let Some(result) = sockets.join_next().await {
        result??;
    }
    Ok(json!({
        "sockets": total,
        "connect_seconds": connecting.as_secs_f64(),
        "connect_rate": total as f64 / connecting.as_secs_f64().max(1e-9),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "per_socket_kib": rss_after.saturating_sub(rss_before) as f64 / total.max(1) as f64,
        "checkpoints": samples,
    }))
}

/// How the dialogs send.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each side keeps this many messages in flight: the most the server
    /// can carry.
    Window(usize),
    /// Messages per second over all dialogs, at fixed intended times.
    Rate(f64),
}

/// What one dialog run measures.
#[derive(Debug, Clone, Copy)]
pub struct DialogRun {
    /// Dialogs (pairs of clients), both sides sending.
    pub dialogs: usize,
    /// How they send.
    pub pace: Pace,
    /// Not measured: the server and the clients warm up.
    pub warmup: Duration,
    /// Measured.
    pub measure: Duration,
    /// After a fixed-rate run: how long messages still in flight are awaited.
    pub drain: Duration,
}

#[derive(Debug)]
struct SideOutcome {
    /// Latency from the intended send time.
    intended: Histogram<u64>,
    /// Latency from the actual send time.
    sent: Histogram<u64>,
    /// Messages this side sent with an intended time inside the window.
    measured_sent: u64,
    /// The server closed the socket during the run (over capacity, the
    /// server dropped it as a slow reader).
    dropped: bool,
}

/// Dialogs: sets up the pairs, runs them, and counts the messages each
/// side receives from the other (for Chat the sender's own copy, its
/// confirmation, is read and not counted). Optionally counts the server's
/// write system calls over the measured window with `perf stat`.
pub async fn dialogs(
    target: Target,
    server: SocketAddr,
    pid: u32,
    run: DialogRun,
    accounts: &[Account],
    count_writes: bool,
) -> Result<Value> {
    if target == Target::Chat && accounts.len() < 2 * run.dialogs {
        bail!(
            "{} dialogs need {} accounts; {} given",
            run.dialogs,
            2 * run.dialogs,
            accounts.len()
        );
    }
    // Set up every pair, a few at a time.
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY / 2));
    let mut setup = JoinSet::new();
    for d in 0..run.dialogs {
        let gate = gate.clone();
        let (a_account, b_account) = if target == Target::Chat {
            (
                Some(accounts[2 * d].clone()),
                Some(accounts[2 * d + 1].clone()),
            )
        } else {
            (None, None)
        };
        setup.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut a = connect_one(target, server, 2 * d, a_account.as_ref()).await?;
            let mut b = connect_one(target, server, 2 * d + 1, b_account.as_ref()).await?;
            let b_user = b_account.map_or(0, |acc| acc.id);
            Client::pair(&mut a, &mut b, b_user).await?;
            anyhow::Ok((a, b))
        });
    }
    let mut pairs = Vec::new();
    while let Some(pair) = setup.join_next().await {
        pairs.push(pair?.context("setting up a dialog")?);
    }
    eprintln!("    {} dialogs set up", pairs.len());

    let sockets = 2 * run.dialogs;
    let start = now_nanos() + 100_000_000;
    let window_start = start + u64::try_from(run.warmup.as_nanos()).unwrap_or(u64::MAX);
    let window_end = window_start + u64::try_from(run.measure.as_nanos()).unwrap_or(u64::MAX);
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let mut sides = JoinSet::new();
    for (d, (a, b)) in pairs.into_iter().enumerate() {
        let window = match run.pace {
            Pace::Window(w) => w,
            Pace::Rate(_) => 0,
        };
        let a_to_b = Arc::new(Semaphore::new(window));
        let b_to_a = Arc::new(Semaphore::new(window));
        for (i, (client, mine, theirs)) in
            [(a, a_to_b.clone(), b_to_a.clone()), (b, b_to_a, a_to_b)]
                .into_iter()
                .enumerate()
        {
            let offset = match run.pace {
                // Spread the sockets' first sends over one interval.
                Pace::Rate(rate) => {
                    let interval = sockets as f64 / rate;
                    ((2 * d + i) as f64 / sockets as f64 * interval * 1e9) as u64
                }
                Pace::Window(_) => 0,
            };
            let delivered = delivered.clone();
            let stop = stop.clone();
            let pace = run.pace;
            sides.spawn(run_side(
                client,
                pace,
                sockets,
                start + offset,
                (window_start, window_end),
                (mine, theirs),
                delivered,
                stop,
            ));
        }
    }

    tokio::time::sleep_until(instant_at(window_start).into()).await;
    let counted_from = delivered.load(Ordering::Relaxed);
    let cpu_from = cpu_seconds(pid);
    let writes = count_writes.then(|| start_perf(pid, run.measure));
    tokio::time::sleep_until(instant_at(window_end).into()).await;
    let counted = delivered.load(Ordering::Relaxed) - counted_from;
    let cpu = cpu_seconds(pid) - cpu_from;
    let (rss, _) = process_usage(pid);
    // Without perf (or its tracepoints) the run still counts; the report
    // says why the write calls are missing.
    let writes = match writes {
        Some(Ok(perf)) => Some(finish_perf(perf).await),
        Some(Err(e)) => Some(Err(e)),
        None => None,
    };
    if matches!(run.pace, Pace::Rate(_)) {
        tokio::time::sleep(run.drain).await;
    }
    stop_tx.send_replace(true);
    let mut intended = histogram();
    let mut sent = histogram();
    let mut measured_sent = 0;
    let mut dropped = 0;
    while let Some(side) = sides.join_next().await {
        let side = side??;
        intended.add(&side.intended)?;
        sent.add(&side.sent)?;
        measured_sent += side.measured_sent;
        dropped += usize::from(side.dropped);
    }
    let seconds = run.measure.as_secs_f64();
    let mut out = json!({
        "dialogs": run.dialogs,
        "delivered": counted,
        "delivered_per_s": counted as f64 / seconds,
        "server_cpu_s": cpu,
        "sockets_dropped": dropped,
        "server_rss_kib": rss,
        "latency": quantiles_ms(&intended),
        "latency_from_actual_send": quantiles_ms(&sent),
    });
    if let Pace::Rate(rate) = run.pace {
        out["offered_per_s"] = json!(rate);
        out["sent_in_window"] = json!(measured_sent);
        out["lost"] = json!(measured_sent.saturating_sub(intended.len()));
    }
    match writes {
        Some(Ok(writes)) => {
            out["write_syscalls"] = json!(writes);
            out["writes_per_delivered"] = json!(writes as f64 / counted.max(1) as f64);
        }
        Some(Err(e)) => {
            eprintln!("    write calls not counted: {e:#}");
            out["writes_error"] = json!(format!("{e:#}"));
        }
        None => {}
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn run_side(
    mut client: Client,
    pace: Pace,
    sockets: usize,
    first: u64,
    (window_start, window_end): (u64, u64),
    (mine, theirs): (Arc<Semaphore>, Arc<Semaphore>),
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<SideOutcome> {
    let mut outcome = SideOutcome {
        intended: histogram(),
        sent: histogram(),
        measured_sent: 0,
        dropped: false,
    };
    let interval = match pace {
        Pace::Rate(rate) => (sockets as f64 / rate * 1e9) as u64,
        Pace::Window(_) => 0,
    };
    let mut next = first;
    tokio::time::sleep_until(instant_at(first).into()).await;
    let mut exchange = async || -> Result<()> {
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                frame = client.ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(close))) => bail!("closed by the server: {close:?}"),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(e.into()),
                        None => bail!("socket closed by the server"),
                    };
                    if let Some(answer) = client.answer(text.as_str()) {
                        client.ws.send(answer).await?;
                        continue;
                    }
                    let Some((side, intended, sent)) = read_stamp(text.as_str()) else { continue };
                    if side == client.side {
                        continue; // Chat's confirmation of our own message
                    }
                    let now = now_nanos();
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if intended >= window_start {
                        outcome.intended.saturating_record(now.saturating_sub(intended).max(1));
                        outcome.sent.saturating_record(now.saturating_sub(sent).max(1));
                    }
                    if let Pace::Window(_) = pace {
                        theirs.add_permits(1);
                    }
                }
                permit = mine.acquire(), if matches!(pace, Pace::Window(_)) => {
                    permit?.forget();
                    let mut batch = 1;
                    while let Ok(more) = mine.try_acquire() {
                        more.forget();
                        batch += 1;
                    }
                    for _ in 0..batch {
                        let now = now_nanos();
                        let frame = client.message(now, now);
                        client.ws.feed(frame).await?;
                    }
                    client.ws.flush().await?;
                }
                () = tokio::time::sleep_until(instant_at(next).into()),
                    if matches!(pace, Pace::Rate(_)) && next < window_end =>
                {
                    // Every message due by now goes, each stamped with the time
                    // it was due: a late server shows up as latency.
                    let now = now_nanos();
                    while next <= now && next < window_end {
                        let frame = client.message(next, now);
                        client.ws.feed(frame).await?;
                        if (window_start..window_end).contains(&next) {
                            outcome.measured_sent += 1;
                        }
                        next += interval.max(1);
                    }
                    client.ws.flush().await?;
                }
            }
        }
    };
    if let Err(e) = exchange().await {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            eprintln!("    a socket ended early (the first; all are counted): {e:#}");
        }
        outcome.dropped = true;
    }
    Ok(outcome)
}

fn start_perf(pid: u32, measure: Duration) -> Result<tokio::process::Child> {
    tokio::process::Command::new("perf")
        .args(["stat", "-x", ",", "-e"])
        .arg(WRITE_EVENTS.join(","))
        .arg("-p")
        .arg(pid.to_string())
        .arg("--")
        .arg("sleep")
        .arg(format!("{:.3}", measure.as_secs_f64()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting perf (install linux-perf)")
}

/// The system calls that write to a socket.
const WRITE_EVENTS: [&str; 4] = [
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_sendmsg",
];

async fn finish_perf(perf: tokio::process::Child) -> Result<u64> {
    let out = perf.wait_with_output().await?;
    let text = String::from_utf8_lossy(&out.stderr);
    let mut total = 0;
    let mut seen = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() > 2 && WRITE_EVENTS.contains(&fields[2]) {
            seen += 1;
            total += fields[0]
                .parse::<u64>()
                .with_context(|| format!("perf: {line}"))?;
        }
    }
    if seen == 0 {
        bail!("perf counted nothing: {text}");
    }
    Ok(total)
}

/// Calls `each` with the id of every user a `presence` frame names as
/// joined (the first number of each row of `"joined":[[id,"name",color],
/// ...]`, the colour a palette index or a string), reading nothing else of it; `None` if the list is not shaped
/// so. 5,000 observers read about 5 million entries in a second on the
/// cores the relay uses: decoding each into a whole `ServerMsg` took the
/// load generator more CPU than the relay spent sending them, and even
/// serde skipping all but the ids took a seventh of its time.
fn joined_ids(text: &str, mut each: impl FnMut(u64)) -> Option<()> {
    const KEY: &str = r#""joined":["#;
    let bytes = text.as_bytes();
    // A frame that names no one joined has no `joined`.
    let Some(at) = text.find(KEY) else {
        return Some(());
    };
    let mut i = at + KEY.len();
    loop {
        match *bytes.get(i)? {
            b']' => return Some(()),
            b',' => i += 1,
            _ => {}
        }
        if *bytes.get(i)? != b'[' {
            return None;
        }
        i += 1;
        let digits = i;
        let mut id = 0u64;
        while let Some(d @ b'0'..=b'9') = bytes.get(i).copied() {
            id = id.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            i += 1;
        }
        if i == digits {
            return None;
        }
        each(id);
        // The rest of the row: strings may hold `]` and escaped quotes.
        loop {
            match *bytes.get(i)? {
                b'"' => {
                    i += 1;
                    loop {
                        match *bytes.get(i)? {
                            b'\\' => i += 2,
                            b'"' => break,
                            _ => i += 1,
                        }
                    }
                    i += 1;
                }
                b']' => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
    }
}

/// Presence: `observers` users online, then `joiners` more come online
/// spread over `join_window`. Every observer records, for each joiner, the
/// time from the joiner's `hello` to the presence frame that names it, and
/// when each presence frame arrived. `target` is the relay or the floor
/// (whose clients send their own row instead of signing in); socket.io has
/// no presence.
pub async fn presence(
    target: Target,
    server: SocketAddr,
    observers: usize,
    joiners: usize,
    join_window: Duration,
    accounts: &[Account],
) -> Result<Value> {
    if target == Target::Socketio {
        bail!("the socket.io peer has no presence");
    }
    if accounts.len() < observers + joiners {
        bail!(
            "presence needs {} accounts; {} given",
            observers + joiners,
            accounts.len()
        );
    }
    // Joiner user ids, sorted, each with its slot in `hello_at`.
    let mut slots: Vec<(u64, usize)> = accounts[observers..observers + joiners]
        .iter()
        .enumerate()
        .map(|(k, acc)| (acc.id, k))
        .collect();
    slots.sort_unstable();
    let slots = Arc::new(slots);
    let hello_at: Arc<Vec<AtomicU64>> = Arc::new((0..joiners).map(|_| AtomicU64::new(0)).collect());
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let missing_ids = Arc::new(Mutex::new(0u64));
    let mut tasks = JoinSet::new();
    for (index, account) in accounts[..observers].iter().cloned().enumerate() {
        let (gate, connected, complete, armed) = (
            gate.clone(),
            connected.clone(),
            complete.clone(),
            armed.clone(),
        );
        let (slots, hello_at, mut stop) = (slots.clone(), hello_at.clone(), stop.clone());
        let missing_ids = missing_ids.clone();
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await?;
            let mut client = observer(target, server, index, &account).await?;
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            // Recorded into a histogram after the burst, not during it.
            let mut latency = Vec::with_capacity(joiners);
            let mut frames = Vec::new();
            let mut seen = vec![false; joiners];
            let mut count = 0;
            // One wait for the stop, not a new one per frame.
            let stopped = stop.changed();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    frame = client.next() => {
                        let text = match frame {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(_)) => continue,
                            _ => bail!("observer {index} was disconnected"),
                        };
                        if !armed.load(Ordering::Relaxed) || !text.as_str().starts_with(r#"{"type":"presence""#) {
                            continue;
                        }
                        let now = now_nanos();
                        let mut news = false;
                        joined_ids(text.as_str(), |id| {
                            let Ok(k) = slots.binary_search_by_key(&id, |&(id, _)| id) else {
                                return;
                            };
                            let k = slots[k].1;
                            let at = hello_at[k].load(Ordering::Relaxed);
                            if at == 0 {
                                *missing_ids.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                                return;
                            }
                            if !seen[k] {
                                seen[k] = true;
                                count += 1;
                                news = true;
                                latency.push(now.saturating_sub(at).max(1));
                            }
                        });
                        if news {
                            frames.push(now);
                        }
                        if news && count == joiners {
                            complete.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ = &mut stopped => break,
                }
            }
            anyhow::Ok(Some((latency, frames, count)))
        });
    }
    let began = Instant::now();
    while connected.load(Ordering::Relaxed) < observers {
        if let Some(Ok(Err(e)) | Err(e)) = tasks
            .try_join_next()
            .map(|r| r.map_err(anyhow::Error::from))
        {
            return Err(e.context("connecting the observers"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let observers_took = began.elapsed();
    eprintln!(
        "    {observers} observers online in {:.1} s",
        observers_took.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    armed.store(true, Ordering::Relaxed);

    // The joiners: each starts at its moment within the window, and notes
    // how long its welcome took and how big it was.
    let welcomes = Arc::new(Mutex::new(Vec::with_capacity(joiners)));
    let t0 = now_nanos();
    let step = join_window.as_nanos() as u64 / joiners.max(1) as u64;
    for (k, account) in accounts[observers..observers + joiners]
        .iter()
        .cloned()
        .enumerate()
    {
        let (hello_at, mut stop) = (hello_at.clone(), stop.clone());
        let welcomes = welcomes.clone();
        let index = observers + k;
        tasks.spawn(async move {
            tokio::time::sleep_until(instant_at(t0 + k as u64 * step).into()).await;
            let mut client = joiner(target, server, index, &account, &hello_at[k]).await?;
            let welcome = crate::client::next_text(&mut client, target).await?;
            let took = now_nanos().saturating_sub(hello_at[k].load(Ordering::Relaxed));
            welcomes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((took, welcome.len()));
            loop {
                tokio::select! {
                    frame = client.next() => match frame {
                        Some(Ok(_)) => {}
                        _ => bail!("joiner {k} was disconnected"),
                    },
                    _ = stop.changed() => break,
                }
            }
            anyhow::Ok(None)
        });
    }
    let patience = Instant::now() + join_window + Duration::from_secs(15);
    while complete.load(Ordering::Relaxed) < observers && Instant::now() < patience {
        if let Some(Ok(Err(e)) | Err(e)) = tasks
            .try_join_next()
            .map(|r| r.map_err(anyhow::Error::from))
        {
            return Err(e.context("during the joins"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hellos: Vec<u64> = hello_at
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|&t| t > 0)
        .collect();
    let window = hellos
        .iter()
        .max()
        .unwrap_or(&0)
        .saturating_sub(*hellos.iter().min().unwrap_or(&0));
    stop_tx.send_replace(true);

    let mut latency = histogram();
    let mut max_frames_per_s = 0;
    let mut learned = 0u64;
    while let Some(result) = tasks.join_next().await {
        let Some((took, frames, count)) = result?? else {
            continue;
        };
        for t in took {
            latency.saturating_record(t);
        }
        learned += count as u64;
        // The most frames within any one second.
        let mut first = 0;
        for last in 0..frames.len() {
            while frames[last] - frames[first] >= 1_000_000_000 {
                first += 1;
            }
            max_frames_per_s = max_frames_per_s.max(last + 1 - first);
        }
    }
    let missing = *missing_ids.lock().unwrap_or_else(|e| e.into_inner());
    let mut welcome_latency = histogram();
    let mut welcome_bytes = Vec::new();
    for &(took, bytes) in welcomes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        welcome_latency.saturating_record(took.max(1));
        welcome_bytes.push(bytes);
    }
    welcome_bytes.sort_unstable();
    Ok(json!({
        "joiner_welcome": quantiles_ms(&welcome_latency),
        "joiner_welcome_bytes_median": welcome_bytes.get(welcome_bytes.len() / 2).copied().unwrap_or(0),
        "observers": observers,
        "joiners": joiners,
        "observers_connect_s": observers_took.as_secs_f64(),
        "join_window_s": window as f64 / 1e9,
        "learned": learned,
        "expected": (observers * joiners) as u64,
        "complete_observers": complete.load(Ordering::Relaxed),
        "named_before_hello": missing,
        "latency": quantiles_ms(&latency),
        "max_presence_frames_per_s": max_frames_per_s,
    }))
}

/// The round trip of a 100-byte message between two threads over one
/// loopback TCP connection, each blocked in `recv` until the bytes come,
/// `rate` times a second (so that both sleep in between, as in the
/// unloaded dialog): one hop there and one back, with no runtime, no
/// WebSocket and no relay. A relayed message also makes two hops (to the
/// relay, on to the recipient), so this is the least any relay's unloaded
/// latency can be on this machine.
pub fn loopback(count: usize, rate: f64) -> Result<Value> {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> Result<()> {
        let (mut socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        let mut buf = [0u8; crate::client::MESSAGE_BYTES];
        loop {
            match socket.read_exact(&mut buf) {
                Ok(()) => socket.write_all(&buf)?,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    });
    let mut socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let pause = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let message = [b'x'; crate::client::MESSAGE_BYTES];
    let mut back = [0u8; crate::client::MESSAGE_BYTES];
    let mut round_trip = histogram();
    let warmup = count / 10;
    for i in 0..warmup + count {
        std::thread::sleep(pause);
        let sent = Instant::now();
        socket.write_all(&message)?;
        socket.read_exact(&mut back)?;
        let took = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if i >= warmup {
            round_trip.saturating_record(took.max(1));
        }
    }
    drop(socket);
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    Ok(json!({ "round_trip": quantiles_ms(&round_trip), "rate": rate }))
}

/// An online observer of the presence burst, greeted.
async fn observer(
    target: Target,
    server: SocketAddr,
    index: usize,
    account: &Account,
) -> Result<crate::client::Sock> {
    if target == Target::Chat {
        return Ok(connect_one(target, server, index, Some(account)).await?.ws);
    }
    retrying(|| async {
        let mut ws = crate::client::open(server, index, "/presence", &[]).await?;
        ws.send(Message::text(floor_row(account))).await?;
        let welcome = crate::client::next_text(&mut ws, target).await?;
        if !welcome.starts_with(r#"{"type":"welcome""#) {
            bail!("expected welcome, got {welcome}");
        }
        Ok(ws)
    })
    .await
}

/// A joining client: its hello time is recorded just before the hello (on
/// the floor, its row) goes.
async fn joiner(
    target: Target,
    server: SocketAddr,
    index: usize,
    account: &Account,
    hello_at: &AtomicU64,
) -> Result<crate::client::Sock> {
    let (mut ws, hello) = if target == Target::Chat {
        let headers = [
            ("Origin", format!("http://{server}")),
            ("Cookie", account.cookie.clone()),
        ];
        let ws = crate::client::open(server, index, "/ws", &headers).await?;
        let hello = shared::protocol::ClientMsg::Hello {
            protocol: shared::protocol::PROTOCOL_VERSION,
            resume: vec![],
        };
        (ws, hello.encode())
    } else {
        let ws = crate::client::open(server, index, "/presence", &[]).await?;
        (ws, floor_row(account))
    };
    hello_at.store(now_nanos(), Ordering::Relaxed);
    ws.send(Message::text(hello)).await?;
    Ok(ws)
}

/// The online-list row the relay would write for `account`, which a
/// floor client sends as its first frame: the floor carries the same bytes.
fn floor_row(account: &Account) -> String {
    let palette = shared::protocol::PALETTE;
    let user = shared::protocol::User {
        id: shared::protocol::UserId(account.id),
        name: account.name.clone(),
        color: palette[account.id as usize % palette.len()].to_string(),
    };
    serde_json::to_string(&shared::protocol::user_rows::row(&user))
        .expect("a row always serializes")
}

#[cfg(test)]
mod tests {
    use super::joined_ids;
    use shared::protocol::{Activity, ServerMsg, User, UserActivity, UserId};

    fn ids(text: &str) -> Option<Vec<u64>> {
        let mut ids = Vec::new();
        joined_ids(text, |id| ids.push(id)).map(|()| ids)
    }

    /// The loopback baseline times as many round trips as asked, each of
    /// them some time, the slowest no faster than the median.
    #[test]
    fn loopback_times_every_round_trip() {
        let v = super::loopback(50, 1000.0).unwrap();
        assert_eq!(v["round_trip"]["count"], 50);
        let p50 = v["round_trip"]["p50_ms"].as_f64().unwrap();
        assert!(p50 > 0.0, "{v}");
        assert!(v["round_trip"]["max_ms"].as_f64().unwrap() >= p50, "{v}");
    }

    /// The scanner finds the ids serde finds, whatever the names hold.
    #[test]
    fn joined_ids_reads_the_rows_as_serde_does() {
        let names = ["alice", "b]ob", "c\"l,o]e\\", "dé🦀", "[[9,\"x\"]]", ""];
        let joined: Vec<User> = names
            .iter()
            .enumerate()
            .map(|(i, name)| User {
                id: UserId(1000 + i as u64 * 7),
                name: (*name).into(),
                color: "#123456".into(),
            })
            .collect();
        let msg = ServerMsg::Presence {
            joined: joined.clone(),
            left: vec![UserId(5)],
            activity: vec![UserActivity {
                user: UserId(6),
                activity: Activity::Active,
            }],
        };
        let text = msg.encode();
        let want: Vec<u64> = joined.iter().map(|u| u.id.0).collect();
        assert_eq!(ids(&text), Some(want), "{text}");
        let empty = ServerMsg::Presence {
            joined: vec![],
            left: vec![UserId(5)],
            activity: vec![],
        };
        assert_eq!(ids(&empty.encode()), Some(vec![]));
        assert_eq!(ids(r#"{"type":"presence","joined":[[1,"a""#), None);
        assert_eq!(ids(r#"{"type":"presence","joined":[1]}"#), None);
        assert_eq!(ids(r#"{"type":"presence","joined":[["x"]]}"#), None);
    }
}
