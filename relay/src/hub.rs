//! The hub: one task that owns the domain [`Core`] and carries out its
//! effects. Connections send it [`Command`]s over one bounded channel; it
//! applies them in order (one total order, so every tab of every
//! participant sees the same sequence), ticks the core every presence batch
//! interval, and writes each outbound frame, serialized once, into the
//! recipients' bounded queues. A recipient whose queue is full is dropped
//! on the spot (SPEC L6): nobody waits for a slow reader.
//!
//! Shutdown (SPEC R3) is a point in that same order: the hub orders every
//! connection closed with 1012, behind whatever it already queued for it,
//! and stamps nothing after. So a message confirmed to its sender was
//! queued to every recipient before their close frame, and a message that
//! comes later is never confirmed: it stays pending in the page.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::protocol::{close_code, ClientMsg, Resume, ServerMsg, User};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

use crate::core::{ConnId, Core, Limits, Millis, Outbound, SessionId};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Commands waiting for the hub before senders wait too.
const COMMAND_QUEUE: usize = 4096;
/// The close reason sent with 1012 at shutdown.
pub const RESTARTING: &str = "relay restarting";

/// Why the hub wants a connection gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOrder {
    /// Its queue was full: drop it without ceremony.
    SlowConsumer,
    /// Send a close frame with this code and reason.
    Close(u16, &'static str),
}

/// What the hub keeps of a connection: its outbound queue and its kill switch.
#[derive(Debug)]
pub struct ConnHandle {
    /// The connection's bounded outbound queue.
    pub out: mpsc::Sender<Message>,
    /// Fired once when the hub closes the connection.
    pub close: oneshot::Sender<CloseOrder>,
}

/// What connections and the HTTP API tell the hub.
#[derive(Debug)]
pub enum Command {
    /// A connection said `hello`.
    Connect {
        /// Its number.
        conn: ConnId,
        /// Its browser's session.
        session: SessionId,
        /// Its user.
        user: User,
        /// Where it left off, on a reconnect.
        resume: Vec<Resume>,
        /// How to reach it.
        handle: ConnHandle,
    },
    /// A valid frame after `hello`.
    Frame {
        /// From where.
        conn: ConnId,
        /// What.
        msg: ClientMsg,
    },
    /// The connection is gone.
    Disconnect {
        /// Which.
        conn: ConnId,
    },
    /// A session ended (log out): close its tabs.
    EndSession {
        /// Which.
        session: SessionId,
    },
}

/// A handle to the hub task.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: mpsc::Sender<Command>,
}

impl Hub {
    /// Starts the hub task. It runs until every `Hub` handle is dropped;
    /// once `shutdown` fires it closes every connection and stamps nothing more.
    pub fn spawn(limits: Limits, metrics: Arc<Metrics>, shutdown: Shutdown) -> Hub {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        // Grace periods end and presence batches go out on this beat.
        let tick = limits.presence_batch;
        tokio::spawn(run(Core::new(limits), tick, rx, metrics, shutdown));
        Hub { tx }
    }

    /// Sends a command; false if the hub has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }
}

/// The wall clock, in Unix milliseconds: read here, passed into the core.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn run(
    mut core: Core,
    tick: Duration,
    mut rx: mpsc::Receiver<Command>,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut closing = false;
    loop {
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else { break };
                apply(&mut core, &mut conns, command, closing);
                // Drain what else is waiting before writing, so bursts batch.
                while let Ok(command) = rx.try_recv() {
                    apply(&mut core, &mut conns, command, closing);
                }
            }
            _ = ticker.tick() => core.tick(now_millis()),
            // Everything applied so far was dispatched at the end of the
            // last turn, so each close order comes after those frames.
            () = shutdown.recv(), if !closing => {
                closing = true;
                for (_, handle) in conns.drain() {
                    let _ = handle
                        .close
                        .send(CloseOrder::Close(close_code::SERVICE_RESTART, RESTARTING));
                }
            }
        }
        dispatch(&mut core, &mut conns, &metrics);
        metrics
            .online_users
            .store(core.online_count() as u64, Ordering::Relaxed);
        metrics
            .conversations
            .store(core.conversation_count() as u64, Ordering::Relaxed);
        metrics
            .messages_relayed
            .store(core.messages_stamped(), Ordering::Relaxed);
    }
    debug!("hub stopped");
}

/// Applies one command; once `closing`, new connections are sent away and
/// frames are dropped unstamped.
fn apply(
    core: &mut Core,
    conns: &mut HashMap<ConnId, ConnHandle>,
    command: Command,
    closing: bool,
) {
    let now = now_millis();
    match command {
        Command::Connect { handle, .. } if closing => {
            let _ = handle
                .close
                .send(CloseOrder::Close(close_code::SERVICE_RESTART, RESTARTING));
        }
        Command::Frame { .. } if closing => {}
        Command::Connect {
            conn,
            session,
            user,
            resume,
            handle,
        } => {
            conns.insert(conn, handle);
            core.connect(conn, session, user, &resume, now);
        }
        Command::Frame { conn, msg } => core.frame(conn, msg, now),
        Command::Disconnect { conn } => {
            conns.remove(&conn);
            core.disconnect(conn, now);
        }
        Command::EndSession { session } => core.end_session(session, now),
    }
}

fn dispatch(core: &mut Core, conns: &mut HashMap<ConnId, ConnHandle>, metrics: &Metrics) {
    loop {
        let outbound = core.take_outbound();
        if outbound.is_empty() {
            return;
        }
        let mut slow = Vec::new();
        for effect in outbound {
            match effect {
                Outbound::Send { to, msg } => {
                    if let ServerMsg::Error { kind, .. } = &msg {
                        metrics.error(*kind);
                    }
                    // Serialized once; each recipient's frame shares the bytes.
                    let frame = Message::text(msg.encode());
                    for conn in to {
                        let Some(handle) = conns.get(&conn) else {
                            continue;
                        };
                        match handle.out.try_send(frame.clone()) {
                            Ok(()) => {
                                metrics.frames_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Full(_)) => slow.push(conn),
                            Err(mpsc::error::TrySendError::Closed(_)) => {}
                        }
                    }
                }
                Outbound::Close { conn, code, reason } => {
                    if let Some(handle) = conns.remove(&conn) {
                        let _ = handle.close.send(CloseOrder::Close(code, reason));
                    }
                }
            }
        }
        for conn in slow {
            if let Some(handle) = conns.remove(&conn) {
                warn!(conn = conn.0, "outbound queue full: dropping a slow client");
                metrics.queue_drops.fetch_add(1, Ordering::Relaxed);
                let _ = handle.close.send(CloseOrder::SlowConsumer);
                core.disconnect(conn, now_millis());
            }
        }
    }
}
