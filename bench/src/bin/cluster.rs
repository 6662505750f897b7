//! Cluster sizing: messages per second and latency through Redis, against
//! one relay without Redis, measured in the same run, rounds interleaved.
//!
//! Build with `cargo build --release -p relay -p bench`, then run
//! `target/release/cluster [--relay target/release/relay] [--dialogs N]
//! [--seconds S] [--rounds R] [--window W] [--fsync always|everysec]`
//! (docs/DEPLOY.md has the figures).
//!
//! Each dialog is two users; the sender keeps `--window` messages
//! unconfirmed and the receiver timestamps each arrival. "One relay":
//! both users on a relay without `--redis`. "Across relays": the sender on
//! relay A, the receiver on relay B, both with `--redis` on a
//! `redis-server` started here (append-only file on, `--fsync`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bench::{connect, login, next, Ws};
use futures_util::SinkExt;
use shared::protocol::{ClientMsg, ClientMsgId, ConversationId, ServerMsg, PROTOCOL_VERSION};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "cluster-bench-1";

struct Args {
    relay: PathBuf,
    dialogs: usize,
    seconds: u64,
    rounds: usize,
    window: usize,
    fsync: String,
}

fn args() -> Result<Args> {
    let mut args = Args {
        relay: "target/release/relay".into(),
        dialogs: 50,
        seconds: 5,
        rounds: 3,
        window: 8,
        fsync: "always".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--relay" => args.relay = value.into(),
            "--dialogs" => args.dialogs = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--rounds" => args.rounds = value.parse()?,
            "--window" => args.window = value.parse()?,
            "--fsync" => args.fsync = value,
            other => bail!(
                "unknown flag {other} (--relay PATH, --dialogs N, --seconds S, --rounds R, \
                 --window W, --fsync always|everysec)"
            ),
        }
    }
    if args.dialogs == 0 || args.window == 0 || args.rounds == 0 {
        bail!("--dialogs, --window and --rounds must be at least 1");
    }
    Ok(args)
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        // A child's readiness cannot be awaited: ask again shortly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn start_redis(dir: &Path, fsync: &str) -> Result<(Process, String)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--appendonly", "yes", "--appendfsync", fsync, "--save", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("redis-server runs (`cargo xtask setup` installs it)")?;
    wait_for(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    Ok((Process(child), format!("redis://127.0.0.1:{port}/")))
}

async fn start_relay(
    args: &Args,
    dir: &Path,
    redis: Option<&str>,
) -> Result<(Process, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut command = Command::new(&args.relay);
    command
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--db")
        .arg(dir.join(format!("chat-{}.db", addr.port())))
        .arg("--static-dir")
        .arg(dir)
        .args(["--message-rate", "1000000", "--message-burst", "1000000"])
        .args(["--outbound-queue", "4096"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = redis {
        command.arg("--redis").arg(url);
    }
    let child = command
        .spawn()
        .with_context(|| format!("{} runs", args.relay.display()))?;
    wait_for(addr).await?;
    Ok((Process(child), addr))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One dialog's two open tabs.
struct Dialog {
    sender: Ws,
    receiver: Ws,
    conversation: ConversationId,
}

async fn dialogs(
    setup: &str,
    sender_at: SocketAddr,
    receiver_at: SocketAddr,
    count: usize,
) -> Result<Vec<Dialog>> {
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: vec![],
    };
    let mut out = Vec::new();
    for i in 0..count {
        let from = login(sender_at, &format!("{setup}s{i}"), PASSWORD).await?;
        let to_name = format!("{setup}r{i}");
        let to = login(receiver_at, &to_name, PASSWORD).await?;
        let (receiver, welcome) = connect(receiver_at, &to, &hello).await?;
        let ServerMsg::Welcome { me, .. } = welcome else {
            bail!("no welcome")
        };
        let (mut sender, _) = connect(sender_at, &from, &hello).await?;
        let open = ClientMsg::Open { with: vec![me.id] };
        sender.send(Message::text(open.encode())).await?;
        let conversation = loop {
            if let ServerMsg::Opened { conversation } =
                next(&mut sender, Duration::from_secs(10)).await?
            {
                break conversation;
            }
        };
        out.push(Dialog {
            sender,
            receiver,
            conversation,
        });
    }
    Ok(out)
}

/// Runs every dialog for `seconds`; returns delivered messages per second
/// and every latency in microseconds.
async fn run(
    dialogs: Vec<Dialog>,
    seconds: u64,
    window: usize,
) -> Result<(f64, Vec<u64>, Vec<Dialog>)> {
    let delivered = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, mut d) in dialogs.into_iter().enumerate() {
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sent = 0u64;
            let mut unconfirmed = 0usize;
            let base = (i as u64) << 32;
            while Instant::now() < stop_at || unconfirmed > 0 {
                while unconfirmed < window && Instant::now() < stop_at {
                    sent += 1;
                    let msg = ClientMsg::Send {
                        conversation: d.conversation,
                        client_id: ClientMsgId(base + sent),
                        text: format!("{}", now_micros()),
                    };
                    d.sender.send(Message::text(msg.encode())).await?;
                    unconfirmed += 1;
                }
                // The receiver's copy gives the latency; the sender's own
                // copy confirms it.
                loop {
                    if let ServerMsg::Message { message, .. } =
                        next(&mut d.receiver, Duration::from_secs(10)).await?
                    {
                        let sent_at: u64 = message.text.parse().unwrap_or(0);
                        latencies.push(now_micros().saturating_sub(sent_at));
                        delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                loop {
                    if let ServerMsg::Message { .. } =
                        next(&mut d.sender, Duration::from_secs(10)).await?
                    {
                        unconfirmed -= 1;
                        break;
                    }
                }
            }
            anyhow::Ok((latencies, d))
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut back = Vec::new();
    for task in tasks {
        let (latencies, dialog) = task.await??;
        all.extend(latencies);
        back.push(dialog);
    }
    let rate = delivered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok((rate, all, back))
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let dir = std::env::temp_dir().join(format!("chat-cluster-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), "<title>Chat</title>")?;

    let (_redis, url) = start_redis(&dir, &args.fsync).await?;
    let (_single, single) = start_relay(&args, &dir, None).await?;
    let (_a, a) = start_relay(&args, &dir, Some(&url)).await?;
    let (_b, b) = start_relay(&args, &dir, Some(&url)).await?;
    println!(
        "{} dialogs, window {}, {} s per round, {} rounds each, Redis appendfsync {}",
        args.dialogs, args.window, args.seconds, args.rounds, args.fsync
    );
    let alone = dialogs("one", single, single, args.dialogs).await?;
    let across = dialogs("two", a, b, args.dialogs).await?;
    let mut setups = [("one relay    ", alone), ("across relays", across)];
    let mut results: [(Vec<f64>, Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..args.rounds {
        for ((name, dialogs), result) in setups.iter_mut().zip(&mut results) {
            let (rate, lat, back) = run(std::mem::take(dialogs), args.seconds, args.window).await?;
            *dialogs = back;
            let (p50, p99) = (quantile(&lat, 0.5), quantile(&lat, 0.99));
            println!("round {round}: {name} {rate:>8.0} msg/s  p50 {p50:.2} ms  p99 {p99:.2} ms");
            result.0.push(rate);
            result.1.push(p50);
            result.2.push(p99);
        }
    }
    let [one, two] = results.map(|(r, p50, p99)| (median(r), median(p50), median(p99)));
    println!("| setup | delivered msg/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!(
        "| one relay, no Redis | {:.0} | {:.2} | {:.2} |",
        one.0, one.1, one.2
    );
    println!(
        "| two relays via Redis (fsync {}) | {:.0} | {:.2} | {:.2} |",
        args.fsync, two.0, two.1, two.2
    );
    println!(
        "| ratio (via Redis / one relay) | {:.2} | {:.2} | {:.2} |",
        two.0 / one.0,
        two.1 / one.1,
        two.2 / one.2
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
