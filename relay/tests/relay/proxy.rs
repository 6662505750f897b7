//! A fault-injecting TCP proxy between test clients and the relay: `tc
//! netem` does not work on the project's machines, so faults are made here.
//!
//! Each accepted connection gets its own upstream connection and two pumps,
//! one per direction, each with one bounded buffer ([`BUFFER`]). The
//! [`Proxy`] handle changes what the pumps do:
//! - [`Proxy::blackhole`]: nothing is forwarded either way, but every socket
//!   stays open (the pumps stop reading, so the kernel buffers fill and the
//!   senders block, as behind a dead link);
//! - [`Proxy::cut`]: every current connection is reset (RST on both sides),
//!   and new connections are accepted as before;
//! - [`Proxy::heal`]: forwarding resumes.
//!
//! Started with a [`Lag`], what clients send takes a while to reach the
//! relay, and what was on its way at a cut still arrives, later, on the
//! old connection, before that one is reset too: a slow old path
//! delivering after the client has reconnected by another.
//!
//! Dropping the handle stops the listener and every pump.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};

/// Bytes one pump holds at a time, per direction and connection.
const BUFFER: usize = 16 * 1024;

/// What the pumps are told to do.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Forward nothing, keep the sockets.
    blackholed: bool,
    /// How many cuts so far: a connection accepted before the latest cut
    /// is reset.
    cuts: u64,
}

/// Delays on the way from clients to the relay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lag {
    /// How long what a client sends takes to reach the relay.
    pub latency: Duration,
    /// How long after a cut what was still on its way reaches the relay.
    pub stragglers: Duration,
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    stragglers: Arc<AtomicU64>,
}

/// One direction of one connection, once its pump stopped.
#[derive(Debug)]
struct Pumped {
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    stop: Stop,
    /// Bytes read but not yet delivered when a cut came.
    in_flight: Vec<u8>,
}

/// Why a pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Its source closed or broke; the close was passed on.
    Closed,
    /// Cut, or the proxy was dropped: reset both sockets.
    Reset,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        Proxy::start_with(upstream, Lag::default()).await
    }

    /// As [`Proxy::start`], with what clients send delayed by `lag`.
    pub async fn start_with(upstream: SocketAddr, lag: Lag) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (faults, watch) = watch::channel(Faults::default());
        let stragglers = Arc::new(AtomicU64::new(0));
        let upstream = Upstream {
            addr: upstream,
            lag,
            stragglers: stragglers.clone(),
        };
        tokio::spawn(accept_loop(listener, upstream, watch));
        Proxy {
            addr,
            faults,
            stragglers,
        }
    }

    /// How many times bytes in flight at a cut were delivered late.
    pub fn stragglers(&self) -> u64 {
        self.stragglers.load(Ordering::Relaxed)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding in both directions; sockets stay open.
    pub fn blackhole(&self) {
        self.faults.send_modify(|f| f.blackholed = true);
    }

    /// Resets every current connection; new ones are accepted.
    pub fn cut(&self) {
        self.faults.send_modify(|f| f.cuts += 1);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.faults.send_modify(|f| f.blackholed = false);
    }
}

/// Where and how the proxy forwards.
#[derive(Debug, Clone)]
struct Upstream {
    addr: SocketAddr,
    lag: Lag,
    stragglers: Arc<AtomicU64>,
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Upstream,
    mut faults: watch::Receiver<Faults>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let epoch = faults.borrow().cuts;
                tokio::spawn(serve(client, upstream.clone(), faults.clone(), epoch));
            }
            changed = faults.changed() => if changed.is_err() {
                return; // the proxy was dropped
            },
        }
    }
}

/// One proxied connection, accepted while `epoch` cuts had happened.
async fn serve(client: TcpStream, upstream: Upstream, faults: watch::Receiver<Faults>, epoch: u64) {
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream.addr)).await
    else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let latency = upstream.lag.latency;
    let (up, down) = tokio::join!(
        pump(client_read, server_write, faults.clone(), epoch, latency),
        pump(server_read, client_write, faults, epoch, Duration::ZERO),
    );
    if up.stop == Stop::Closed && down.stop == Stop::Closed {
        return;
    }
    // Reset: the client at once; the relay once what was on its way arrived.
    if let Ok(client) = up.from.reunite(down.to) {
        let _ = client.set_zero_linger();
    }
    if let Ok(mut server) = down.from.reunite(up.to) {
        if !up.in_flight.is_empty() {
            sleep(upstream.lag.stragglers).await;
            if server.write_all(&up.in_flight).await.is_ok() {
                upstream.stragglers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = server.set_zero_linger();
    }
}

/// Copies `from` to `to`, each read `latency` later, while not
/// blackholed, until `from` closes, a cut comes, or the proxy is dropped.
/// Returns the halves so that a reset can reach the whole socket.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    epoch: u64,
    latency: Duration,
) -> Pumped {
    let mut buffer = vec![0u8; BUFFER];
    let mut in_flight = Vec::new();
    let stop = loop {
        let now = *faults.borrow_and_update();
        if now.cuts != epoch {
            break Stop::Reset;
        }
        if now.blackholed {
            if faults.changed().await.is_err() {
                break Stop::Reset;
            }
            continue;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = faults.changed() => {
                if changed.is_err() {
                    break Stop::Reset;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                break Stop::Closed;
            }
            Ok(n) => n,
        };
        if !latency.is_zero() {
            let due = Instant::now() + latency;
            tokio::select! {
                () = sleep_until(due) => {}
                () = cut_or_dropped(faults.clone(), epoch) => {
                    in_flight = buffer[..n].to_vec();
                    break Stop::Reset;
                }
            }
        }
        // A write in progress finishes even if a blackhole begins (the
        // bytes already left their sender); only a cut or the end stops it.
        tokio::select! {
            written = to.write_all(&buffer[..n]) => if written.is_err() {
                break Stop::Closed;
            },
            () = cut_or_dropped(faults.clone(), epoch) => break Stop::Reset,
        }
    };
    Pumped {
        from,
        to,
        stop,
        in_flight,
    }
}

/// Resolves once a cut after `epoch` happens or the proxy is dropped.
async fn cut_or_dropped(mut faults: watch::Receiver<Faults>, epoch: u64) {
    while faults.borrow_and_update().cuts == epoch {
        if faults.changed().await.is_err() {
            return;
        }
    }
}
