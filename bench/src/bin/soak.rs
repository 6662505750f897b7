//! Soak: many signed-in clients for minutes, a fifth of them reconnecting
//! every minute while messages flow; the relay's memory and open files are
//! sampled throughout, after a one-minute warm-up round that everyone
//! leaves. Run with `cargo xtask soak` (10 minutes, 2,000 clients) or
//! directly:
//! `soak --relay target/release/relay [--clients N] [--minutes M]`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::{connect, login, next, process_usage, slope};
use clap::Parser;
use futures_util::SinkExt;
use shared::protocol::{ClientMsg, ClientMsgId, ConversationId, ServerMsg, PROTOCOL_VERSION};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const TABS_PER_USER: usize = 20;
const PASSWORD: &str = "soak-password-1";
/// Seconds RSS is followed for once everyone is offline.
const AFTER_SECONDS: usize = 20;

/// Many signed-in clients for minutes against a release relay, with churn
/// and messages; prints the relay's memory and open files throughout.
#[derive(Parser)]
struct Args {
    /// The relay binary to start.
    #[arg(long, default_value = "target/release/relay")]
    relay: String,
    #[command(flatten)]
    round: Round,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let users = args.round.clients.div_ceil(TABS_PER_USER).max(2) & !1;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let db = std::env::temp_dir().join(format!("chat-soak-{}.db", std::process::id()));
    let mut relay = tokio::process::Command::new(&args.relay)
        .args(["--listen", &addr.to_string(), "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.relay))?;
    let pid = relay.id().context("relay pid")?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the relay did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = process_usage(pid);
    println!(
        "relay pid {pid} on {addr}: idle {} KiB, {} fds",
        idle.0, idle.1
    );

    let mut cookies = Vec::new();
    for u in 0..users {
        cookies.push(login(addr, &format!("soak{u:04}"), PASSWORD).await?);
    }
    // The cold baseline: the accounts and sessions exist, no socket has
    // been opened yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signed_in = process_usage(pid);
    println!("signed in ({users} users): {} KiB", signed_in.0);
    // A first round warms the relay up: every size of allocation its
    // connections make has then been made on every thread, and the pages
    // the allocator keeps for them are there. A leak shows as growth from
    // this warm baseline; the cold one shows the cost of having served.
    let warm_up = Round {
        minutes: 1,
        ..args.round
    };
    println!(
        "warm-up: {} clients for 1 minute, then all leave",
        args.round.clients
    );
    let warm = run_round(addr, pid, &cookies, users, &warm_up).await?;
    println!(
        "warm baseline, everyone gone: {} KiB, {} fds",
        warm.after.0, warm.after.1
    );
    let measured = run_round(addr, pid, &cookies, users, &args.round).await?;
    let Outcome {
        baseline,
        end,
        after,
        samples,
        reconnects,
        received,
    } = measured;
    let per_minute = slope(&samples);
    let metrics = bench::get(addr, "/metrics").await.unwrap_or_default();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("chat_") && !l.contains("errors_total"))
    {
        println!("after all left: {line}");
    }
    println!("---");
    println!(
        "clients {}, minutes {}, reconnects {}, frames received {}",
        args.round.clients, args.round.minutes, reconnects, received
    );
    println!(
        "RSS KiB: idle {}, signed in {}, warm (after the warm-up round left) {}, steady {}, \
         end of churn {}, after all left {}",
        idle.0, signed_in.0, warm.after.0, baseline.0, end.0, after.0
    );
    println!(
        "RSS after all left: {:.2}x the warm baseline, {:.2}x the signed-in one",
        after.0 as f64 / warm.after.0.max(1) as f64,
        after.0 as f64 / signed_in.0.max(1) as f64
    );
    println!(
        "open files: idle {}, steady {}, end of churn {}, after all left {}",
        idle.1, baseline.1, end.1, after.1
    );
    println!("RSS slope during churn: {per_minute:+.1} KiB/min");
    let _ = relay.kill().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    if after.1 > idle.1 + 2 {
        bail!(
            "open files did not return to idle: {} -> {}",
            idle.1,
            after.1
        );
    }
    Ok(())
}

/// What one round runs: its clients, for how long, how they behave.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Round {
    /// WebSockets held open (20 tabs per user).
    #[arg(long, default_value_t = 2_000)]
    clients: usize,
    /// Minutes of the measured round (after a one-minute warm-up round).
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// One message per user every this many ms (0: no messages).
    #[arg(long, default_value_t = 2_000)]
    message_every_ms: u64,
    /// Reconnect a fifth of the clients every minute.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    churn: bool,
}

/// The relay's usage (RSS KiB, open files) through one round.
struct Outcome {
    /// Everyone connected, before the first churn.
    baseline: (u64, usize),
    /// After the last churn settled, everyone still connected.
    end: (u64, usize),
    /// Everyone gone and offline.
    after: (u64, usize),
    /// RSS through the round: (minutes, KiB).
    samples: Vec<(f64, f64)>,
    reconnects: u64,
    received: u64,
}

/// One round: a dialog for each pair of users, `round.clients` tabs
/// connected for `round.minutes` (a fifth reconnecting every minute if
/// `round.churn`), then everyone leaves and goes offline.
async fn run_round(
    addr: SocketAddr,
    pid: u32,
    cookies: &[String],
    users: usize,
    round: &Round,
) -> Result<Outcome> {
    // Each pair of users shares a dialog.
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: vec![],
    };
    let mut user_ids = Vec::new();
    for cookie in cookies {
        let (ws, welcome) = connect(addr, cookie, &hello).await?;
        let ServerMsg::Welcome { me, .. } = welcome else {
            unreachable!()
        };
        user_ids.push(me.id);
        drop(ws);
    }
    let mut dialogs = vec![ConversationId(0); users];
    for pair in (0..users).step_by(2) {
        let (mut ws, _) = connect(addr, &cookies[pair], &hello).await?;
        let (_peer, _) = connect(addr, &cookies[pair + 1], &hello).await?;
        ws.send(Message::text(
            ClientMsg::Open {
                with: vec![user_ids[pair + 1]],
            }
            .encode(),
        ))
        .await?;
        loop {
            if let ServerMsg::Opened { conversation } =
                next(&mut ws, Duration::from_secs(10)).await?
            {
                dialogs[pair] = conversation;
                dialogs[pair + 1] = conversation;
                break;
            }
        }
    }

    let received = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (churn_tx, churn_rx) = watch::channel(0u64);
    let mut tasks = Vec::new();
    for client in 0..round.clients {
        let user = client % users;
        let tab = client / users;
        let (cookie, conversation) = (cookies[user].clone(), dialogs[user]);
        let (received, reconnects) = (received.clone(), reconnects.clone());
        let (mut stop, mut churn) = (stop_rx.clone(), churn_rx.clone());
        let hello = hello.clone();
        let every = Duration::from_millis(round.message_every_ms.max(1));
        let sends = tab == 0 && round.message_every_ms > 0;
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let Ok((mut ws, _)) = connect(addr, &cookie, &hello).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let mut ticker = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        frame = futures_util::StreamExt::next(&mut ws) => match frame {
                            Some(Ok(Message::Text(_))) => { received.fetch_add(1, Ordering::Relaxed); }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        _ = ticker.tick(), if sends => {
                            sent += 1;
                            let msg = ClientMsg::Send {
                                conversation,
                                client_id: ClientMsgId(sent),
                                text: format!("soak message {sent} from client {client}"),
                            };
                            if ws.send(Message::text(msg.encode())).await.is_err() { break; }
                        }
                        Ok(()) = churn.changed() => {
                            let turn = *churn.borrow();
                            // A fifth of the clients, a different fifth each round.
                            if (client as u64 + turn).is_multiple_of(5) {
                                reconnects.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        _ = stop.changed() => {
                            let _ = ws.close(None).await;
                            return;
                        }
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(20)).await; // warm-up: everyone connected
    let baseline = process_usage(pid);
    println!(
        "steady with {} clients: {} KiB, {} fds",
        round.clients, baseline.0, baseline.1
    );
    let mut samples = Vec::new();
    let soak_started = Instant::now();
    let mut minute = 0;
    while soak_started.elapsed() < Duration::from_secs(round.minutes * 60) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rss, fds) = process_usage(pid);
        let minutes = soak_started.elapsed().as_secs_f64() / 60.0;
        samples.push((minutes, rss as f64));
        if soak_started.elapsed() >= Duration::from_secs(60 * (minute + 1)) {
            minute += 1;
            if round.churn {
                churn_tx.send_replace(minute);
            }
            println!(
                "minute {minute}: {rss} KiB, {fds} fds, {} frames received, {} reconnects",
                received.load(Ordering::Relaxed),
                reconnects.load(Ordering::Relaxed)
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(20)).await; // the last churn settles
    let end = process_usage(pid);
    stop_tx.send_replace(true);
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_secs(13)).await; // grace period, then offline
                                                       // RSS each second for 20 s more, while the relay sits idle; the last
                                                       // reading is the round's "after all left".
    let mut settling = vec![process_usage(pid)];
    for _ in 0..AFTER_SECONDS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        settling.push(process_usage(pid));
    }
    let rss: Vec<u64> = settling.iter().map(|(rss, _)| *rss).collect();
    println!("  after all left, RSS KiB second by second from 13 s: {rss:?}");
    println!(
        "  after all left, largest mappings: {}",
        largest_mappings(pid, 4)
    );
    let after = settling[AFTER_SECONDS];
    Ok(Outcome {
        baseline,
        end,
        after,
        samples,
        reconnects: reconnects.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
    })
}

/// The `count` mappings of `pid` holding the most resident memory, from
/// `/proc/PID/smaps`: where the RSS is (the allocator's arena, the heap of
/// the C allocator, thread stacks).
fn largest_mappings(pid: u32, count: usize) -> String {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return "unreadable".into();
    };
    let mut mappings: Vec<(u64, String)> = Vec::new();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            // "start-end perms offset dev inode [path]"
            let path = words.nth(4).unwrap_or("[anonymous]");
            let size = first
                .split_once('-')
                .and_then(|(a, b)| {
                    Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
                })
                .unwrap_or(0);
            name = format!("{path} ({} KiB mapped)", size / 1024);
        } else if first == "Rss:" {
            let kib = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            mappings.push((kib, name.clone()));
        }
    }
    mappings.sort_unstable_by(|a, b| b.cmp(a));
    mappings
        .iter()
        .take(count)
        .map(|(kib, name)| format!("{kib} KiB in {name}"))
        .collect::<Vec<_>>()
        .join("; ")
}
