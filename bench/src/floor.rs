//! The floor: a bare WebSocket forwarder on warp and tokio. It pairs
//! sockets (`GET /ws?pair=N&side=a|b`) and hands every frame from one side
//! to the other: no sign-in, no presence, no JSON. What it achieves is what
//! the hardware and the libraries allow, so the benchmark measures the relay
//! against it.
//!
//! With `confirm` it also sends every frame back to its sender, after
//! handing it to the peer: three frames per message, as the relay sends
//! (the recipient's copy, and the sender's own as its confirmation, SPEC
//! C5/C6). It bounds what a relay that confirms each message can reach.
//!
//! Its `/presence` route ([`presence`]) is the same floor for the presence
//! burst: rows in, the same `welcome` and batched `presence` frames out,
//! without accounts or JSON.
//!
//! It is built the way the relay's transport is: the upgrade is done here
//! (hyper's `OnUpgrade`, then `WebSocketStream::from_raw_socket` with small
//! tungstenite buffers, [`ws_config`]), each socket has a bounded outbound
//! queue drained by a writer that feeds what is ready and flushes once, and
//! a peer whose queue is full is disconnected. So it is a fair baseline for
//! memory per connection as well as for speed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

pub mod presence;

/// Bytes tungstenite reads from the socket at a time (its default is 128 KiB,
/// allocated up front for every connection).
pub const READ_BUFFER: usize = 4 * 1024;
/// Bytes gathered before tungstenite writes without a flush; a flush always
/// writes everything.
pub const WRITE_BUFFER: usize = 4 * 1024;
/// The largest frame accepted, as in the relay (SPEC L3).
pub const MAX_FRAME: usize = 64 * 1024;
/// Frames waiting to be written to one socket before it counts as too slow
/// (the relay's `--outbound-queue` default).
pub const OUTBOUND_QUEUE: usize = 256;

/// The tungstenite settings of a socket, on either end.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_FRAME + WRITE_BUFFER + 1024)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
}

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// One side of a pair, as the other side reaches it.
#[derive(Debug, Clone)]
struct Side {
    /// Tells registrations apart when a side reconnects.
    generation: u64,
    out: mpsc::Sender<Message>,
    /// The side's connection task, to drop a slow reader.
    task: Option<AbortHandle>,
}

#[derive(Debug, Default)]
struct Pairs {
    // Never held across an `.await`.
    sides: Mutex<HashMap<(u64, bool), Side>>,
    generation: AtomicU64,
}

impl Pairs {
    fn register(&self, key: (u64, bool), out: mpsc::Sender<Message>) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let side = Side {
            generation,
            out,
            task: None,
        };
        self.lock().insert(key, side);
        generation
    }

    fn set_task(&self, key: (u64, bool), generation: u64, task: AbortHandle) {
        if let Some(side) = self.lock().get_mut(&key) {
            if side.generation == generation {
                side.task = Some(task);
            }
        }
    }

    fn peer(&self, key: (u64, bool)) -> Option<Side> {
        self.lock().get(&(key.0, !key.1)).cloned()
    }

    fn unregister(&self, key: (u64, bool), generation: u64) {
        let mut sides = self.lock();
        if sides.get(&key).is_some_and(|s| s.generation == generation) {
            sides.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, bool), Side>> {
        self.sides.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Deserialize)]
struct PairQuery {
    pair: u64,
    side: String,
}

/// Serves the floor on `listener` until the process ends; with `confirm`,
/// each frame also goes back to its sender.
pub async fn run(listener: TcpListener, confirm: bool) {
    // As the relay: no Nagle delay (accepted sockets inherit it on Linux).
    let _ = socket2::SockRef::from(&listener).set_tcp_nodelay(true);
    let pairs = Arc::new(Pairs::default());
    let pairs = warp::any().map(move || pairs.clone());
    let ws = warp::path!("ws")
        .and(warp::get())
        .and(warp::query::<PairQuery>())
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and(pairs)
        .map(move |query, key, on_upgrade, pairs| upgrade(query, key, on_upgrade, pairs, confirm));
    let (events, roster) = mpsc::unbounded_channel();
    tokio::spawn(presence::roster(roster));
    let keys = Arc::new(AtomicU64::new(0));
    let presence = warp::path!("presence")
        .and(warp::get())
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .map(move |key: Option<String>, on_upgrade: Option<OnUpgrade>| {
            let (Some(key), Some(on_upgrade)) = (key, on_upgrade) else {
                return plain(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
            };
            let id = keys.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(presence::serve(on_upgrade, id, events.clone()));
            switching_protocols(&key)
        });
    let healthz = warp::path!("healthz").map(|| StatusCode::OK);
    warp::serve(healthz.or(ws).or(presence))
        .incoming(listener)
        .run()
        .await;
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    warp::reply::with_status(text, status).into_response()
}

/// Answers the upgrade request and, once hyper hands over the socket,
/// forwards its frames. The side is registered before the 101 goes out, so
/// a client whose peer has its 101 too can send at once.
fn upgrade(
    query: PairQuery,
    key: Option<String>,
    on_upgrade: Option<OnUpgrade>,
    pairs: Arc<Pairs>,
    confirm: bool,
) -> Response {
    let side = match query.side.as_str() {
        "a" => false,
        "b" => true,
        _ => return plain(StatusCode::BAD_REQUEST, "side must be a or b"),
    };
    let (Some(key), Some(on_upgrade)) = (key, on_upgrade) else {
        return plain(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    };
    let slot = (query.pair, side);
    let (out, queue) = mpsc::channel(OUTBOUND_QUEUE);
    let own = confirm.then(|| out.clone());
    let generation = pairs.register(slot, out);
    let task = tokio::spawn({
        let pairs = pairs.clone();
        async move {
            if let Ok(upgraded) = on_upgrade.await {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config()),
                )
                .await;
                forward(socket, queue, own, &pairs, slot).await;
            }
            pairs.unregister(slot, generation);
        }
    });
    pairs.set_task(slot, generation, task.abort_handle());
    switching_protocols(&key)
}

/// The 101 answer to an upgrade request with this `Sec-WebSocket-Key`.
fn switching_protocols(key: &str) -> Response {
    let accept = derive_accept_key(key.as_bytes());
    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Reads this side's frames into the peer's queue (and, with `own`, back
/// into this side's) while a writer drains this side's own queue.
async fn forward(
    socket: Socket,
    queue: mpsc::Receiver<Message>,
    own: Option<mpsc::Sender<Message>>,
    pairs: &Pairs,
    slot: (u64, bool),
) {
    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(sink, queue));
    let mut peer: Option<Side> = None;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let msg = match frame {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => msg,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue, // pings are answered by tungstenite
                };
                if peer.as_ref().is_none_or(|p| p.out.is_closed()) {
                    peer = pairs.peer(slot);
                }
                let Some(to) = &peer else { continue };
                let echo = own.as_ref().map(|own| (own, msg.clone()));
                if let Err(mpsc::error::TrySendError::Full(_)) = to.out.try_send(msg) {
                    // A peer that does not read is dropped, as the relay does.
                    if let Some(task) = &to.task {
                        task.abort();
                    }
                    peer = None;
                }
                if let Some((own, msg)) = echo {
                    if let Err(mpsc::error::TrySendError::Full(_)) = own.try_send(msg) {
                        break; // this side does not read: drop it
                    }
                }
            }
            _ = &mut writer => break,
        }
    }
    writer.abort();
}

/// Writes the queue to the socket as it fills ([`write_ready`]).
async fn write_loop(mut sink: SplitSink<Socket, Message>, mut queue: mpsc::Receiver<Message>) {
    while let Some(first) = queue.recv().await {
        if write_ready(&mut sink, first, &mut queue).await.is_err() {
            return;
        }
    }
}

/// Feeds `first` and every queued frame that is ready, then flushes once.
async fn write_ready<S>(
    sink: &mut S,
    first: Message,
    queue: &mut mpsc::Receiver<Message>,
) -> Result<(), S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut next = Some(first);
    while let Some(msg) = next.take().or_else(|| queue.try_recv().ok()) {
        sink.feed(msg).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::client::{open, Client, Target};

    /// A floor on a free port, and the two sides of its pair 0.
    async fn floor_and_pair(confirm: bool) -> (SocketAddr, Client, Client) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(run(listener, confirm));
        let a = Client::connect(Target::Floor, addr, 0, None).await.unwrap();
        let b = Client::connect(Target::Floor, addr, 1, None).await.unwrap();
        (addr, a, b)
    }

    #[tokio::test]
    async fn a_frame_from_one_side_reaches_only_the_other() {
        let (addr, mut a, mut b) = floor_and_pair(false).await;
        let mut other = Client::connect(Target::Floor, addr, 3, None).await.unwrap();
        a.ws.send(Message::text("hello b")).await.unwrap();
        b.ws.send(Message::text("hello a")).await.unwrap();
        let got = b.ws.next().await.unwrap().unwrap();
        assert_eq!(got.to_text().unwrap(), "hello b");
        let got = a.ws.next().await.unwrap().unwrap();
        assert_eq!(got.to_text().unwrap(), "hello a");
        // Pair 1 has only side b: its frames go nowhere, and nothing of
        // pair 0 reached it.
        other.ws.send(Message::text("anyone?")).await.unwrap();
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(200), other.ws.next()).await;
        assert!(nothing.is_err(), "{nothing:?}");
        // Not an upgrade, or no side: refused.
        assert!(open(addr, 0, "/ws?pair=1&side=c", &[]).await.is_err());
    }

    #[tokio::test]
    async fn confirming_a_frame_goes_to_the_other_side_and_back() {
        let (_, mut a, mut b) = floor_and_pair(true).await;
        a.ws.send(Message::text("from a")).await.unwrap();
        let got = b.ws.next().await.unwrap().unwrap();
        assert_eq!(got.to_text().unwrap(), "from a");
        let back = tokio::time::timeout(std::time::Duration::from_secs(5), a.ws.next())
            .await
            .expect("the sender got its frame back")
            .unwrap()
            .unwrap();
        assert_eq!(back.to_text().unwrap(), "from a");
        // b received one copy only: its next frame is a's next message.
        a.ws.send(Message::text("again")).await.unwrap();
        let got = b.ws.next().await.unwrap().unwrap();
        assert_eq!(got.to_text().unwrap(), "again");
    }
}
