//! One client process: one WebSocket (SPEC U2, L3, L6, R3).
//!
//! A reader (this task) answers frames and keeps the heartbeat; a writer task
//! drains a bounded outbound queue, feeding every frame that is ready and
//! flushing once. A client that lets its queue fill up is disconnected rather
//! than allowed to slow anyone else down.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use shared::protocol::{close_code, ClientMsg, ErrorKind, ServerMsg, PROTOCOL_VERSION};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, info_span, Instrument};
use warp::ws::{Message, WebSocket};

use crate::server::Relay;

/// How long the relay waits for the client's half of the close handshake.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed the socket or it broke.
    ClientGone,
    /// Nothing arrived within `--heartbeat-timeout`.
    Silent,
    /// The outbound queue was full.
    SlowConsumer,
    /// The relay is shutting down.
    Shutdown,
}

/// Serves one upgraded WebSocket until it ends.
pub async fn serve(socket: WebSocket, relay: Relay) {
    let id = relay.next_connection_id();
    async move {
        debug!("connected");
        let end = Connection::new(socket, relay).run().await;
        info!(?end, "disconnected");
    }
    .instrument(info_span!("conn", id))
    .await
}

struct Connection {
    relay: Relay,
    stream: SplitStream<WebSocket>,
    out: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<()>,
    greeted: bool,
}

impl Connection {
    fn new(socket: WebSocket, relay: Relay) -> Self {
        let (sink, stream) = socket.split();
        let (out, queue) = mpsc::channel(relay.config().outbound_queue as usize);
        let writer = tokio::spawn(write_loop(sink, queue).in_current_span());
        Connection {
            relay,
            stream,
            out,
            writer,
            greeted: false,
        }
    }

    async fn run(mut self) -> End {
        let interval = self.relay.config().heartbeat_interval;
        let timeout = self.relay.config().heartbeat_timeout;
        let mut shutdown = self.relay.shutdown();
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut deadline = Instant::now() + timeout;

        let end = loop {
            tokio::select! {
                frame = self.stream.next() => match frame {
                    Some(Ok(msg)) => {
                        deadline = Instant::now() + timeout;
                        if msg.is_close() {
                            break End::ClientGone;
                        }
                        if !self.on_frame(msg) {
                            break End::SlowConsumer;
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "read failed");
                        break End::ClientGone;
                    }
                    None => break End::ClientGone,
                },
                _ = ping.tick() => {
                    if !self.push(Message::ping(Vec::new())) {
                        break End::SlowConsumer;
                    }
                }
                () = sleep_until(deadline) => break End::Silent,
                () = shutdown.recv() => break End::Shutdown,
            }
        };
        self.finish(end).await;
        end
    }

    /// Handles one frame; false when the reply could not be queued.
    fn on_frame(&mut self, msg: Message) -> bool {
        if msg.is_ping() || msg.is_pong() {
            return true; // liveness only; tungstenite answers pings itself
        }
        let Ok(text) = msg.to_str() else {
            return self.send(ServerMsg::error(
                ErrorKind::BadFrame,
                "binary frames are not part of the protocol; send JSON text",
            ));
        };
        let reply = match ClientMsg::decode(text) {
            Err(problem) => ServerMsg::error(ErrorKind::BadFrame, problem),
            Ok(ClientMsg::Hello { protocol }) if protocol == PROTOCOL_VERSION => {
                self.greeted = true;
                ServerMsg::Welcome {
                    protocol: PROTOCOL_VERSION,
                }
            }
            Ok(ClientMsg::Hello { protocol }) => ServerMsg::error(
                ErrorKind::UnsupportedProtocol,
                format!("this relay speaks protocol {PROTOCOL_VERSION}, not {protocol}; reload the page"),
            ),
            Ok(_) if !self.greeted => {
                ServerMsg::error(ErrorKind::HelloRequired, "send hello first")
            }
            Ok(ClientMsg::Ping { nonce }) => ServerMsg::Pong { nonce },
        };
        self.send(reply)
    }

    fn send(&self, msg: ServerMsg) -> bool {
        self.push(Message::text(msg.encode()))
    }

    /// Queues a frame for the writer; false when the queue is full.
    fn push(&self, msg: Message) -> bool {
        match self.out.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            // The writer is gone: the socket broke, and the reader will see it.
            Err(TrySendError::Closed(_)) => true,
        }
    }

    async fn finish(self, end: End) {
        let Connection {
            mut stream,
            out,
            writer,
            ..
        } = self;
        match end {
            End::Shutdown => {
                let _ = out
                    .send(Message::close_with(
                        close_code::SERVICE_RESTART,
                        "relay restarting",
                    ))
                    .await;
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

/// Writes queued frames: feeds every frame that is ready, then flushes once,
/// so a burst costs one write rather than one per frame.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut queue: mpsc::Receiver<Message>) {
    while let Some(first) = queue.recv().await {
        let mut batch = Some(first);
        while let Some(msg) = batch.take().or_else(|| queue.try_recv().ok()) {
            let closing = msg.is_close();
            if let Err(e) = sink.feed(msg).await {
                debug!(error = %e, "write failed");
                return;
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
