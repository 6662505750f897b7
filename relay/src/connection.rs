//! One client process: one WebSocket (SPEC U2, L3, L6, R3).
//!
//! The reader (this task) decodes frames and hands valid ones to the hub;
//! a writer task drains the connection's bounded outbound queue, feeding
//! every frame that is ready and flushing once. The hub fills that queue
//! and, when it is full, orders the connection dropped: a slow reader never
//! slows anyone else down. Only this module and the hub touch JSON.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use shared::protocol::{close_code, ClientMsg, ErrorKind, ServerMsg, User, PROTOCOL_VERSION};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Bytes, Message, Utf8Bytes};
use tracing::{debug, info, info_span, Instrument};

use crate::core::{ConnId, SessionId};
use crate::hub::{CloseOrder, Command, ConnHandle, RESTARTING};
use crate::server::Relay;
use crate::ws::{self, WebSocket};

/// How long the relay waits for the client's half of the close handshake.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Invalid frames tolerated per [`VIOLATION_WINDOW`] before the relay
/// closes the connection with 1008 (SPEC L3).
pub const MAX_VIOLATIONS: usize = 10;
/// The window for [`MAX_VIOLATIONS`].
pub const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed the socket or it broke.
    ClientGone,
    /// Nothing arrived within `--heartbeat-timeout`.
    Silent,
    /// The outbound queue was full.
    SlowConsumer,
    /// Closed with this code: shutdown, sign-out, limits.
    Close(u16, &'static str),
}

/// Serves one upgraded WebSocket of `user`, signed in with `session`.
pub async fn serve(socket: WebSocket, relay: Relay, user: User, session: SessionId) {
    let id = ConnId(relay.next_connection_id());
    let metrics = relay.metrics().clone();
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    async move {
        debug!("connected");
        let mut connection = Connection::new(socket, relay.clone(), id);
        let end = connection.run(user, session).await;
        // The hub first: the user's presence must not wait for the close
        // handshake (SPEC U2: a closed socket drops it at once), and the
        // hub's handle is the last sender of the outbound queue, so the
        // writer only drains and closes once the hub lets go of it.
        relay.hub().send(Command::Disconnect { conn: id }).await;
        connection.finish(end).await;
        info!(?end, "disconnected");
    }
    .instrument(info_span!("conn", id = id.0))
    .await;
    metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

struct Connection {
    id: ConnId,
    relay: Relay,
    stream: SplitStream<WebSocket>,
    out: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<()>,
    violations: VecDeque<Instant>,
}

impl Connection {
    fn new(socket: WebSocket, relay: Relay, id: ConnId) -> Self {
        let (sink, stream) = socket.split();
        let (out, queue) = mpsc::channel(relay.config().outbound_queue as usize);
        let writer = tokio::spawn(write_loop(sink, queue, ws::FRAGMENT).in_current_span());
        Connection {
            id,
            relay,
            stream,
            out,
            writer,
            violations: VecDeque::new(),
        }
    }

    async fn run(&mut self, user: User, session: SessionId) -> End {
        let interval = self.relay.config().heartbeat_interval;
        let timeout = self.relay.config().heartbeat_timeout;
        let mut shutdown = self.relay.shutdown();
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut deadline = Instant::now() + timeout;
        let (close_tx, mut close_rx) = oneshot::channel();
        let mut close_tx = Some(close_tx);

        let end = loop {
            tokio::select! {
                frame = self.stream.next() => match frame {
                    Some(Ok(msg)) => {
                        deadline = Instant::now() + timeout;
                        if msg.is_close() {
                            break End::ClientGone;
                        }
                        match self.on_frame(msg) {
                            Ok(None) => {}
                            Ok(Some(ClientMsg::Hello { protocol, resume })) => {
                                let Some(close) = close_tx.take() else {
                                    self.refuse(ErrorKind::HelloRequired, "hello was already said");
                                    continue;
                                };
                                if protocol != PROTOCOL_VERSION {
                                    close_tx = Some(close);
                                    self.refuse(ErrorKind::UnsupportedProtocol, &format!(
                                        "this relay speaks protocol {PROTOCOL_VERSION}, not {protocol}; reload the page"
                                    ));
                                    continue;
                                }
                                let handle = ConnHandle { out: self.out.clone(), close };
                                let connect = Command::Connect {
                                    conn: self.id, session, user: user.clone(), resume, handle,
                                };
                                if !self.relay.hub().send(connect).await {
                                    break End::Close(close_code::SERVICE_RESTART, RESTARTING);
                                }
                            }
                            Ok(Some(msg)) => {
                                if close_tx.is_some() {
                                    self.refuse(ErrorKind::HelloRequired, "send hello first");
                                } else if !self.relay.hub().send(Command::Frame { conn: self.id, msg }).await {
                                    break End::Close(close_code::SERVICE_RESTART, RESTARTING);
                                }
                            }
                            Err(end) => break end,
                        }
                    }
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            break End::Close(close_code::MESSAGE_TOO_BIG, "frame too big");
                        }
                        debug!(error = %e, "read failed");
                        break End::ClientGone;
                    }
                    None => break End::ClientGone,
                },
                order = &mut close_rx, if close_tx.is_none() => match order {
                    Ok(CloseOrder::SlowConsumer) => break End::SlowConsumer,
                    Ok(CloseOrder::Close(code, reason)) => break End::Close(code, reason),
                    Err(_) => break End::Close(close_code::SERVICE_RESTART, RESTARTING),
                },
                _ = ping.tick() => {
                    if self.out.try_send(Message::Ping(Bytes::new())).is_err() {
                        break End::SlowConsumer;
                    }
                }
                () = sleep_until(deadline) => break End::Silent,
                // After hello the hub orders the close at shutdown, behind the
                // frames it queued; before hello nobody else will.
                () = shutdown.recv(), if close_tx.is_some() => {
                    break End::Close(close_code::SERVICE_RESTART, RESTARTING);
                }
            }
        };
        if end == End::Silent {
            self.relay
                .metrics()
                .heartbeat_drops
                .fetch_add(1, Ordering::Relaxed);
        }
        end
    }

    /// Decodes one frame: a protocol message, nothing (pings, or an invalid
    /// frame already answered), or the end when invalid frames pile up.
    fn on_frame(&mut self, msg: Message) -> Result<Option<ClientMsg>, End> {
        let problem = match msg {
            Message::Text(text) => match ClientMsg::decode(&text) {
                Ok(msg) => return Ok(Some(msg)),
                Err(problem) => problem,
            },
            Message::Binary(_) => {
                "binary frames are not part of the protocol; send JSON text".to_string()
            }
            // Liveness only; tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                return Ok(None)
            }
        };
        self.refuse(ErrorKind::BadFrame, &problem);
        let now = Instant::now();
        self.violations.push_back(now);
        while self
            .violations
            .front()
            .is_some_and(|t| now.duration_since(*t) > VIOLATION_WINDOW)
        {
            self.violations.pop_front();
        }
        if self.violations.len() >= MAX_VIOLATIONS {
            return Err(End::Close(
                close_code::POLICY_VIOLATION,
                "too many invalid frames",
            ));
        }
        Ok(None)
    }

    /// Answers this connection directly with an error frame.
    fn refuse(&self, kind: ErrorKind, message: &str) {
        self.relay.metrics().error(kind);
        let frame = Message::text(ServerMsg::error(kind, message).encode());
        // A full queue means the hub is about to drop this client anyway.
        let _ = self.out.try_send(frame);
    }

    async fn finish(self, end: End) {
        let Connection {
            mut stream,
            out,
            writer,
            ..
        } = self;
        match end {
            End::Close(code, reason) => {
                let frame = Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from_static(reason),
                }));
                if out.try_send(frame).is_err() {
                    writer.abort();
                    return;
                }
                drop(out);
                // Keep reading so the client's close frame completes the handshake.
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, writer).await;
            }
            End::ClientGone => {
                drop(out);
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, writer).await;
            }
            End::Silent | End::SlowConsumer => writer.abort(),
        }
    }
}

/// True when the read failed because a frame or message exceeded the size limit.
fn is_too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

/// Writes queued frames: feeds every frame that is ready, then flushes once,
/// so a burst costs one write rather than one per frame. A message longer
/// than `fragment` bytes goes out as fragments ([`ws::fragments`]), so the
/// socket's write buffer never holds more than a fragment and what waits
/// ([`ws::MAX_WRITE_BUFFER`] for the chat).
pub(crate) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Message>,
    fragment: usize,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = Some(first);
        while let Some(msg) = batch.take().or_else(|| queue.try_recv().ok()) {
            let closing = msg.is_close();
            for frame in ws::fragments(msg, fragment) {
                if let Err(e) = sink.feed(frame).await {
                    debug!(error = %e, "write failed");
                    return;
                }
            }
            if closing {
                let _ = sink.flush().await;
                return;
            }
        }
        if let Err(e) = sink.flush().await {
            debug!(error = %e, "flush failed");
            return;
        }
    }
    let _ = sink.close().await;
}
