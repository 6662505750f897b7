//! One client process: one WebSocket (SPEC U2, L3, L6, R3).
//!
//! One task per connection reads the socket, decodes frames and hands
//! valid ones to the hub, and writes the connection's bounded outbound
//! queue to the socket ([`Link`]), feeding every frame that is ready and
//! flushing once. The hub fills that queue
//! and, when it is full, orders the connection dropped: a slow reader never
//! slows anyone else down. Only this module and the hub touch JSON.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared::protocol::{close_code, ClientMsg, ErrorKind, ServerMsg, User, PROTOCOL_VERSION};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Bytes, Message, Utf8Bytes};
use tracing::{debug, debug_span, info, Instrument};

use crate::core::{ConnId, SessionId};
use crate::hub::{CloseOrder, Command, ConnHandle, RESTARTING};
use crate::queue;
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
///
/// Not an `async fn`: the socket moves into the connection here, before
/// the future exists, so the connection's task holds it once (an `async
/// fn` keeps room for its arguments beside everything made from them).
/// The task's future is most of what an idle connection costs: every
/// future awaited in it is kept small (no `async fn` wrappers that hold a
/// second copy of what they pass on).
pub fn serve(
    socket: WebSocket,
    relay: Relay,
    user: User,
    session: SessionId,
) -> impl Future<Output = ()> + Send + 'static {
    let id = ConnId(relay.next_connection_id());
    let mut connection = Connection::new(socket, relay, id, user, session);
    // A span only while debugging. At the default level each connection
    // would take a slot in the log registry, which keeps the slot's field
    // table for good (2,817 tables, 417 KiB, still held after a 10-minute
    // soak had ended: docs/RELIABILITY.md), and enter and leave the span on
    // every poll. The one line logged by default names the connection.
    let span = debug_span!("conn", id = id.0);
    async move {
        let metrics = connection.relay.metrics().clone();
        metrics.connection_opened();
        debug!("connected");
        let end = connection.run().await;
        // The hub first: the user's presence must not wait for the close
        // handshake (SPEC U2: a closed socket drops it at once), and the
        // hub's handle is the last sender of the outbound queue, so the
        // queue only ends, and the socket is only closed, once the hub
        // lets go of it.
        // Boxed, as every command to the hub: see `run`.
        let mut disconnect = Box::pin(
            connection
                .relay
                .hub()
                .send(Command::Disconnect { conn: id }),
        );
        connection.link.writing_while(disconnect.as_mut()).await;
        drop(disconnect);
        connection.finish(end).await;
        info!(conn = id.0, ?end, "disconnected");
        metrics.connection_closed();
    }
    .instrument(span)
}

struct Connection {
    id: ConnId,
    relay: Relay,
    user: User,
    session: SessionId,
    /// The socket, and the outbound queue written to it.
    link: Link,
    /// The queue's own sender (error frames, pings, the close frame);
    /// gone once the connection is finishing.
    out: Option<queue::Sender<Message>>,
    /// Until hello: the half of the hub's close order that goes with
    /// the connection's handle.
    close: Option<oneshot::Sender<CloseOrder>>,
    violations: VecDeque<Instant>,
}

/// What the connection's task waits for next.
enum Event {
    /// What the socket had to say.
    Socket(Io),
    /// The hub's close order (or the hub gone).
    Order(Result<CloseOrder, oneshot::error::RecvError>),
    /// Time to ping, or to give up on a silent client.
    Timer,
}

impl Connection {
    fn new(socket: WebSocket, relay: Relay, id: ConnId, user: User, session: SessionId) -> Self {
        let (out, queue) = queue::bounded(relay.config().outbound_queue as usize);
        Connection {
            id,
            relay,
            user,
            session,
            link: Link::new(socket, queue),
            out: Some(out),
            close: None,
            violations: VecDeque::new(),
        }
    }

    async fn run(&mut self) -> End {
        let interval = self.relay.config().heartbeat_interval;
        let timeout = self.relay.config().heartbeat_timeout;
        let mut shutdown = self.relay.shutdown();
        // One timer for both the pings and the heartbeat deadline: it fires
        // at whichever comes first. A frame only moves the deadline; the
        // timer notices when it fires.
        let mut next_ping = Instant::now() + interval;
        let mut deadline = Instant::now() + timeout;
        let timer = sleep_until(next_ping.min(deadline));
        tokio::pin!(timer);
        let (close_tx, mut close_rx) = oneshot::channel();
        self.close = Some(close_tx);

        let end = loop {
            let said_hello = self.close.is_none();
            // In this order, not at random: the hub's close order first (a
            // check of one flag), then the socket, and the timer only when
            // the socket has nothing, which spares a timer poll per frame.
            // While frames keep coming the timer has nothing to say: each
            // moves the deadline, and a client that sends needs no ping.
            let event = tokio::select! {
                biased;
                order = &mut close_rx, if said_hello => Event::Order(order),
                // After hello the hub orders the close at shutdown, behind the
                // frames it queued; before hello nobody else will.
                () = shutdown.recv(), if !said_hello => {
                    break End::Close(close_code::SERVICE_RESTART, RESTARTING);
                }
                io = poll_fn(|cx| self.link.poll(cx)) => Event::Socket(io),
                () = &mut timer => Event::Timer,
            };
            let frame = match event {
                Event::Socket(Io::Frame(frame)) => frame,
                Event::Socket(Io::Written(written)) => {
                    debug!(?written, "nothing more can be written");
                    break End::ClientGone;
                }
                Event::Order(Ok(CloseOrder::SlowConsumer)) => break End::SlowConsumer,
                Event::Order(Ok(CloseOrder::Close(code, reason))) => {
                    break End::Close(code, reason)
                }
                Event::Order(Err(_)) => break End::Close(close_code::SERVICE_RESTART, RESTARTING),
                Event::Timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        break End::Silent;
                    }
                    if now >= next_ping {
                        if self.queue(Message::Ping(Bytes::new())).is_err() {
                            break End::SlowConsumer;
                        }
                        next_ping += interval;
                        if next_ping <= now {
                            next_ping = now + interval;
                        }
                    }
                    timer.as_mut().reset(next_ping.min(deadline));
                    continue;
                }
            };
            if matches!(frame, Some(Ok(_))) {
                deadline = Instant::now() + timeout;
            }
            let command = match self.on_frame(frame) {
                Ok(Some(command)) => command,
                Ok(None) => continue,
                Err(end) => break end,
            };
            // The hub takes the command at once while its queue has room.
            // When it is full, the task waits for room and the socket goes
            // on being written meanwhile, so a busy hub never holds up what
            // this connection already has to send.
            let taken = match self.relay.hub().try_send(command) {
                Ok(taken) => {
                    // A turn of the task's budget, as awaiting room would
                    // take: a client that floods frames lets the task yield
                    // now and then, so the hub's answers get written
                    // between them instead of piling up in the queue.
                    tokio::task::consume_budget().await;
                    taken
                }
                Err(command) => {
                    // Boxed: this future is the largest thing the task
                    // would otherwise hold for the connection's whole life.
                    let mut send = Box::pin(self.relay.hub().send(command));
                    self.link.writing_while(send.as_mut()).await
                }
            };
            if !taken {
                break End::Close(close_code::SERVICE_RESTART, RESTARTING);
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

    /// What a frame from the client asks of the hub, if anything; or the
    /// end of the connection.
    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Option<Command>, End> {
        let msg = match frame {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                if is_too_big(&e) {
                    return Err(End::Close(close_code::MESSAGE_TOO_BIG, "frame too big"));
                }
                debug!(error = %e, "read failed");
                return Err(End::ClientGone);
            }
            None => return Err(End::ClientGone),
        };
        if msg.is_close() {
            return Err(End::ClientGone);
        }
        match self.decode(msg)? {
            None => Ok(None),
            Some(ClientMsg::Hello { protocol, resume }) => {
                let Some(close) = self.close.take() else {
                    self.refuse(ErrorKind::HelloRequired, "hello was already said");
                    return Ok(None);
                };
                if protocol != PROTOCOL_VERSION {
                    self.close = Some(close);
                    self.refuse(
                        ErrorKind::UnsupportedProtocol,
                        &format!(
                            "this relay speaks protocol {PROTOCOL_VERSION}, not {protocol}; reload the page"
                        ),
                    );
                    return Ok(None);
                }
                let out = self.out.clone().ok_or(End::ClientGone)?;
                Ok(Some(Command::Connect {
                    conn: self.id,
                    session: self.session,
                    user: self.user.clone(),
                    resume,
                    handle: ConnHandle { out, close },
                }))
            }
            Some(msg) => {
                if self.close.is_some() {
                    self.refuse(ErrorKind::HelloRequired, "send hello first");
                    return Ok(None);
                }
                Ok(Some(Command::Frame { conn: self.id, msg }))
            }
        }
    }

    /// Queues a frame of this connection's own.
    fn queue(&self, frame: Message) -> Result<(), ()> {
        match &self.out {
            Some(out) => out.try_send(frame).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Decodes one frame: a protocol message, nothing (pings, or an invalid
    /// frame already answered), or the end when invalid frames pile up.
    fn decode(&mut self, msg: Message) -> Result<Option<ClientMsg>, End> {
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
        let _ = self.queue(frame);
    }

    async fn finish(&mut self, end: End) {
        let out = self.out.take();
        match end {
            End::Close(code, reason) => {
                let frame = Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from_static(reason),
                }));
                if out.is_none_or(|out| out.try_send(frame).is_err()) {
                    // The queue is full: the socket is dropped as it is.
                    return;
                }
                // Write what is queued and the close frame, and keep reading
                // so the client's close frame completes the handshake.
                let _ =
                    tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.link.read_to_end()).await;
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.link.written()).await;
            }
            End::ClientGone => {
                drop(out);
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.link.written()).await;
            }
            // Nothing more is written: the socket is dropped.
            End::Silent | End::SlowConsumer => {}
        }
    }
}

/// True when the read failed because a frame or message exceeded the size limit.
fn is_too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

/// What the socket did: a frame came in (or the stream ended), or the
/// writing side is done.
#[derive(Debug)]
pub(crate) enum Io {
    /// The next frame from the client; `None` once the stream has ended.
    Frame(Option<Result<Message, tungstenite::Error>>),
    /// Nothing more will be written.
    Written(Written),
}

/// How the writing side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// A close frame went out, or the queue ended and the socket was closed.
    Closed,
    /// A write failed: the socket is broken.
    Failed,
}

/// One WebSocket, read and written by its connection's one task, and the
/// bounded outbound queue written to it. Writing feeds every queued frame
/// that is ready, then flushes once, so a burst costs one write rather
/// than one per frame. Data frames go to [`ws::Coalesce`] directly, which
/// writes long payloads from the message's own bytes (one serialization,
/// shared by every recipient); control frames (pings, the close frame) go
/// through tungstenite, which keeps the close handshake.
///
/// Reading and writing share the task: there is no writer task, no lock
/// between two halves of the socket, and the socket lives in the
/// connection's own future. While the task waits for anything else (the
/// hub taking a command), it goes on writing ([`Link::writing_while`]).
pub(crate) struct Link {
    ws: WebSocket,
    queue: queue::Receiver<Message>,
    /// A control frame taken from the queue, waiting for tungstenite.
    control: Option<Message>,
    /// A close frame was handed to tungstenite: the last.
    closing: bool,
    /// Frames were fed since the last flush.
    unflushed: bool,
    /// Set once the writing side is done.
    written: Option<Written>,
}

impl Link {
    /// The socket and the queue to write to it.
    pub(crate) fn new(ws: WebSocket, queue: queue::Receiver<Message>) -> Self {
        Link {
            ws,
            queue,
            control: None,
            closing: false,
            unflushed: false,
            written: None,
        }
    }

    /// Writes what is queued, then waits for the next frame from the
    /// client or the end of the writing side.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Io> {
        if let Poll::Ready(written) = self.poll_write(cx) {
            return Poll::Ready(Io::Written(written));
        }
        self.ws.poll_next_unpin(cx).map(Io::Frame)
    }

    /// Awaits `fut` while the socket goes on being written. The caller
    /// pins `fut` in its own frame: the future returned holds only the
    /// two references.
    pub(crate) fn writing_while<'a, F: Future>(
        &'a mut self,
        mut fut: Pin<&'a mut F>,
    ) -> impl Future<Output = F::Output> + 'a {
        poll_fn(move |cx| {
            // Once writing is done there is nothing to drive.
            let _ = self.poll_write(cx);
            fut.as_mut().poll(cx)
        })
    }

    /// Reads (and drops) frames until the client's stream ends, writing
    /// meanwhile: after a close frame, the client's answer completes the
    /// handshake.
    pub(crate) async fn read_to_end(&mut self) {
        poll_fn(|cx| {
            let _ = self.poll_write(cx);
            loop {
                match ready!(self.ws.poll_next_unpin(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Poll::Ready(()),
                }
            }
        })
        .await;
    }

    /// Writes until the writing side is done: the queue has ended (every
    /// sender gone) or a close frame went out.
    pub(crate) async fn written(&mut self) -> Written {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Written> {
        if let Some(written) = self.written {
            return Poll::Ready(written);
        }
        let written = match ready!(self.poll_write_queue(cx)) {
            Ok(()) => Written::Closed,
            Err(e) => {
                debug!(error = %e, "write failed");
                Written::Failed
            }
        };
        self.written = Some(written);
        Poll::Ready(written)
    }

    /// Ready once a close frame went out or the queue ended (then the
    /// socket is closed), or a write failed.
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        loop {
            if let Some(msg) = self.control.take() {
                if self.ws.poll_ready_unpin(cx)?.is_pending() {
                    self.control = Some(msg);
                    return Poll::Pending;
                }
                self.ws.start_send_unpin(msg)?;
                self.unflushed = true;
            }
            if self.closing {
                return self.ws.poll_flush_unpin(cx);
            }
            // At most GATHER bytes wait before more is taken.
            if self.ws.get_ref().pending() >= ws::GATHER {
                ready!(self.ws.get_mut().poll_drain(cx))?;
            }
            match self.queue.poll_recv(cx) {
                Poll::Ready(Some(msg)) => {
                    let (kind, payload) = match msg {
                        Message::Text(text) => (Data::Text, Bytes::from(text)),
                        Message::Binary(data) => (Data::Binary, data),
                        control => {
                            self.closing = control.is_close();
                            self.control = Some(control);
                            continue;
                        }
                    };
                    self.ws
                        .get_mut()
                        .push_data(kind, payload)
                        .map_err(|ws::AfterClose| {
                            tungstenite::Error::Protocol(
                                tungstenite::error::ProtocolError::SendAfterClosing,
                            )
                        })?;
                    self.unflushed = true;
                }
                Poll::Ready(None) => return self.ws.poll_close_unpin(cx),
                Poll::Pending => {
                    if self.unflushed {
                        ready!(self.ws.poll_flush_unpin(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
