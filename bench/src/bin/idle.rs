//! Memory per idle connection: starts each given relay binary in turn,
//! signs in users, opens WebSockets that say hello, are welcomed and then
//! stay idle, and reports the relay's RSS growth per connection: the
//! least-squares slope of RSS against open connections, sampled after
//! every batch of upgrades from a tenth of the connections on (every user
//! is online by then, and the sign-ins' memory has settled), and the
//! growth between those two ends. Several `--relay`
//! binaries are measured in the same run, one after the other, so the
//! figures compare like with like:
//!
//! `idle --relay old/relay --relay target/release/relay [--connections N]`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::{login, next, process_usage, slope};
use futures_util::SinkExt;
use shared::protocol::{ClientMsg, ServerMsg, PROTOCOL_VERSION};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Tabs per user: under the relay's 32 per user.
const TABS_PER_USER: usize = 25;
const PASSWORD: &str = "idle-password-1";
/// Upgrades in flight at once while the connections are opened.
const OPEN_BATCH: usize = 50;
/// Time for the relay to settle after the last welcome, before measuring.
const SETTLE: Duration = Duration::from_secs(3);
/// The test clients' own buffers: small, so that this process stays small.
const CLIENT_BUFFER: usize = 4 * 1024;

struct Args {
    relays: Vec<String>,
    connections: usize,
}

fn args() -> Result<Args> {
    let mut args = Args {
        relays: Vec::new(),
        connections: 2_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--relay" => args.relays.push(value),
            "--connections" => args.connections = value.parse()?,
            other => bail!("unknown flag {other} (--relay PATH (repeatable), --connections N)"),
        }
    }
    if args.relays.is_empty() {
        args.relays.push("target/release/relay".into());
    }
    if args.connections < 10 * OPEN_BATCH {
        bail!("--connections must be at least {}", 10 * OPEN_BATCH);
    }
    Ok(args)
}

/// One relay's figures: RSS in KiB.
#[derive(Debug)]
struct Figures {
    idle: u64,
    /// Connections open at the first point.
    first_count: usize,
    /// RSS with `first_count` connections.
    first: u64,
    /// RSS with all of them.
    connected: u64,
    after_leaving: u64,
    welcome_bytes: usize,
    /// KiB per connection: the slope of RSS over the connections opened.
    slope: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let mut results = Vec::new();
    for relay in &args.relays {
        let f = measure(relay, args.connections).await?;
        let per = (f.connected as f64 - f.first as f64) / (args.connections - f.first_count) as f64;
        println!(
            "{relay}: idle {} KiB; {} connections {} KiB, {} connections {} KiB: \
             {:.1} KiB per connection (slope; {per:.1} between the ends; welcome {} bytes); \
             all left: {} KiB",
            f.idle,
            f.first_count,
            f.first,
            args.connections,
            f.connected,
            f.slope,
            f.welcome_bytes,
            f.after_leaving
        );
        results.push((relay, f.slope));
    }
    if let Some((base_name, base)) = results.first() {
        for (name, per) in &results[1..] {
            println!(
                "{name} / {base_name}: {:.3} of the memory per connection",
                per / base
            );
        }
    }
    Ok(())
}

async fn measure(relay: &str, connections: usize) -> Result<Figures> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut child = tokio::process::Command::new(relay)
        .args(["--listen", &addr.to_string(), "--db", ":memory:"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {relay}"))?;
    let pid = child.id().context("relay pid")?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("{relay} did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = process_usage(pid).0;

    let users = connections.div_ceil(TABS_PER_USER);
    let mut cookies = Vec::new();
    for u in 0..users {
        cookies.push(login(addr, &format!("idle{u:04}"), PASSWORD).await?);
    }
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: vec![],
    };
    // A tenth of the connections (every user online: each welcome lists
    // them all from then on), then the rest.
    let first_batches = (connections / 10).div_ceil(OPEN_BATCH);
    let mut sockets = Vec::with_capacity(connections);
    let (mut welcome_bytes, mut first) = (0, 0);
    let mut samples = Vec::new();
    let order: Vec<usize> = (0..connections).collect();
    for (n, batch) in order.chunks(OPEN_BATCH).enumerate() {
        let opened = futures_util::future::join_all(
            batch
                .iter()
                .map(|c| open(addr, &cookies[c % users], &hello)),
        )
        .await;
        for result in opened {
            let (ws, bytes) = result?;
            welcome_bytes = bytes;
            sockets.push(ws);
        }
        if n + 1 == first_batches {
            tokio::time::sleep(SETTLE).await;
            first = process_usage(pid).0;
        }
        if n + 1 >= first_batches {
            samples.push((sockets.len() as f64, process_usage(pid).0 as f64));
        }
    }
    tokio::time::sleep(SETTLE).await;
    let connected = process_usage(pid).0;

    for mut ws in sockets.drain(..) {
        let _ = ws.close(None).await;
    }
    // The offline grace (10 s by default) passes, then everyone is gone.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let after_leaving = process_usage(pid).0;
    let _ = child.kill().await;
    Ok(Figures {
        idle,
        first_count: first_batches * OPEN_BATCH,
        first,
        connected,
        after_leaving,
        welcome_bytes,
        slope: slope(&samples),
    })
}

/// Opens a tab as the page does (cookie, Origin, hello) with small client
/// buffers; the socket and the size of its welcome.
async fn open(addr: SocketAddr, cookie: &str, hello: &ClientMsg) -> Result<(bench::Ws, usize)> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("Origin", format!("http://{addr}").parse()?);
    request.headers_mut().insert("Cookie", cookie.parse()?);
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_BUFFER)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    ws.send(Message::text(hello.encode())).await?;
    let welcome = next(&mut ws, Duration::from_secs(20)).await?;
    if !matches!(welcome, ServerMsg::Welcome { .. }) {
        bail!("expected welcome, got {welcome:?}");
    }
    Ok((ws, welcome.encode().len()))
}
