//! The load generator: runs one benchmark scenario against one server and
//! prints its figures as one JSON object on standard output (progress goes
//! to standard error). `cargo xtask bench` starts the servers, runs the
//! scenarios interleaved and writes BENCHMARKS.md from these objects.
//!
//! ```text
//! load accounts --server ADDR --count N --out FILE
//! load idle --target chat|floor|socketio --server ADDR --pid PID --checkpoints 1000,5000,15000 [--accounts FILE --users U]
//! load dialogs --target … --server ADDR --pid PID --dialogs N (--window W | --rate R) [--count-writes]
//! load presence [--target chat|floor] --server ADDR --observers N --joiners M --accounts FILE
//! load loopback [--count N --rate R]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bench::client::{read_accounts, Account, Target};
use bench::scenario::{self, DialogRun, Pace};
use clap::{Parser, Subcommand};

/// Sign-ins in flight at once: each costs the relay an argon2 hash (19 MiB).
const SIGN_IN_CONCURRENCY: usize = 4;
/// The password of every benchmark account.
const PASSWORD: &str = "bench-password-1";

#[derive(Debug, Parser)]
#[command(name = "load", about = "Load generator for Chat's benchmarks")]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Signs up `count` accounts on the relay; writes `id name cookie` lines.
    Accounts {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Idle sockets: connect rate and memory per socket.
    Idle {
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        pid: u32,
        /// Socket counts at which memory is read; the last is the total.
        #[arg(long, value_delimiter = ',', required = true)]
        checkpoints: Vec<usize>,
        #[arg(long)]
        accounts: Option<PathBuf>,
        /// Chat: the sockets are tabs of this many users (the first accounts).
        #[arg(long)]
        users: Option<usize>,
        /// Pause after each checkpoint before memory is read.
        #[arg(long, default_value = "2s", value_parser = humantime_like)]
        settle: Duration,
    },
    /// Dialogs exchanging 100-byte messages.
    Dialogs {
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        dialogs: usize,
        /// Messages in flight per side (throughput).
        #[arg(long, conflicts_with = "rate")]
        window: Option<usize>,
        /// Messages per second over all dialogs (latency).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value = "1s", value_parser = humantime_like)]
        warmup: Duration,
        #[arg(long, default_value = "5s", value_parser = humantime_like)]
        measure: Duration,
        /// After a fixed-rate run: how long messages in flight are awaited.
        #[arg(long, default_value = "2s", value_parser = humantime_like)]
        drain: Duration,
        /// Count the server's write system calls with `perf stat`.
        #[arg(long)]
        count_writes: bool,
        #[arg(long)]
        accounts: Option<PathBuf>,
    },
    /// A burst of users joining while many are online (the relay, or the
    /// floor's presence route with the same accounts' ids and names).
    Presence {
        #[arg(long, value_enum, default_value = "chat")]
        target: Target,
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        observers: usize,
        #[arg(long)]
        joiners: usize,
        #[arg(long, default_value = "1s", value_parser = humantime_like)]
        join_window: Duration,
        #[arg(long)]
        accounts: PathBuf,
    },
    /// No server: two threads passing a message over loopback TCP, the
    /// least a relay's unloaded latency can be here.
    Loopback {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Round trips per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
    },
}

/// `500ms`, `5s`, `2m`.
fn humantime_like(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| text.split_at(i))
        .ok_or_else(|| format!("{text}: write durations like 500ms, 5s or 2m"))?;
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text}: not a number"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text}: write durations like 500ms, 5s or 2m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn accounts(path: Option<&PathBuf>, users: Option<usize>) -> Result<Vec<Account>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let mut all = read_accounts(path)?;
    if let Some(users) = users {
        if users > all.len() {
            bail!(
                "{users} users asked for; {} accounts in {}",
                all.len(),
                path.display()
            );
        }
        all.truncate(users);
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let figures = match args.scenario {
        Scenario::Accounts { server, count, out } => {
            sign_up(server, count, &out).await?;
            serde_json::json!({ "accounts": count })
        }
        Scenario::Idle {
            target,
            server,
            pid,
            checkpoints,
            accounts: file,
            users,
            settle,
        } => {
            let accounts = accounts(file.as_ref(), users)?;
            if target == Target::Chat && accounts.is_empty() {
                bail!("the Chat relay needs --accounts");
            }
            scenario::idle(target, server, pid, &checkpoints, &accounts, settle).await?
        }
        Scenario::Dialogs {
            target,
            server,
            pid,
            dialogs,
            window,
            rate,
            warmup,
            measure,
            drain,
            count_writes,
            accounts: file,
        } => {
            let pace = match (window, rate) {
                (Some(w), None) => Pace::Window(w.max(1)),
                (None, Some(r)) if r > 0.0 => Pace::Rate(r),
                _ => bail!("give --window W or --rate R"),
            };
            let accounts = accounts(file.as_ref(), None)?;
            let run = DialogRun {
                dialogs,
                pace,
                warmup,
                measure,
                drain,
            };
            scenario::dialogs(target, server, pid, run, &accounts, count_writes).await?
        }
        Scenario::Presence {
            target,
            server,
            observers,
            joiners,
            join_window,
            accounts: file,
        } => {
            let accounts = read_accounts(&file)?;
            scenario::presence(target, server, observers, joiners, join_window, &accounts).await?
        }
        Scenario::Loopback { count, rate } => {
            tokio::task::spawn_blocking(move || scenario::loopback(count, rate)).await??
        }
    };
    println!("{figures}");
    Ok(())
}

/// Signs up `count` accounts, a few at a time, and writes them to `out`.
async fn sign_up(server: SocketAddr, count: usize, out: &PathBuf) -> Result<()> {
    use futures_util::StreamExt;
    let started = std::time::Instant::now();
    let results: Vec<Result<String>> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let name = format!("bench{i:05}");
            let (cookie, user) = bench::sign_in(server, &name, PASSWORD)
                .await
                .with_context(|| format!("signing up {name}"))?;
            Ok(format!("{} {name} {cookie}\n", user.id.0))
        })
        .buffered(SIGN_IN_CONCURRENCY)
        .collect()
        .await;
    let mut text = String::new();
    for line in results {
        text.push_str(&line?);
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "    {count} accounts signed up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
