//! The hub: one task that owns the domain [`Core`] and carries out its
//! effects. Connections send it [`Command`]s over one bounded channel; it
//! applies them in order (one total order, so every tab of every
//! participant sees the same sequence), ticks the core every presence batch
//! interval, and writes each outbound frame, serialized once, into the
//! recipients' bounded queues. A recipient whose queue is full is dropped
//! on the spot (SPEC L6): nobody waits for a slow reader.
//!
//! In cluster mode ([`crate::cluster`]) the hub applies events from the
//! cluster's log instead: it appends what its own connections do, applies
//! every relay's events in log order when it reads them back, and delivers
//! the core's frames to the connections it holds.
//!
//! Shutdown (SPEC R3) is a point in that same order: the hub orders every
//! connection closed with 1012, behind whatever it already queued for it,
//! and stamps nothing after. So a message confirmed to its sender was
//! queued to every recipient before their close frame, and a message that
//! comes later is never confirmed: it stays pending in the page.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::protocol::{close_code, ClientMsg, EncodedRoster, Resume, ServerMsg, User};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tracing::{debug, warn};

use crate::cluster::{self, Appender, Event, EventKind, FromLog, HubLink, Snapshot};
use crate::core::{
    release_if_empty, ConnId, Core, IdMap, Limits, Millis, Outbound, Roster, SessionId,
};
use crate::metrics::Metrics;
use crate::queue::{self, TrySendError};
use crate::shutdown::Shutdown;

/// Commands waiting for the hub before senders wait too.
const COMMAND_QUEUE: usize = 4096;
/// The room for effects kept from one hub turn to the next.
const EFFECTS_KEPT: usize = 1024;
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
    pub out: queue::Sender<Message>,
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
    tx: queue::Sender<Command>,
}

impl Hub {
    /// Starts the hub task. It runs until every `Hub` handle is dropped;
    /// once `shutdown` fires it closes every connection and stamps nothing
    /// more. With a `link` it runs in cluster mode: its events come from
    /// the cluster's log.
    pub fn spawn(
        limits: Limits,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        link: Option<HubLink>,
    ) -> Hub {
        let (tx, rx) = queue::bounded(COMMAND_QUEUE);
        // Grace periods end and presence batches go out on this beat.
        let tick = limits.presence_batch;
        let state = State {
            core: Core::new(limits.clone()),
            limits,
            conns: IdMap::default(),
            metrics,
            closing: false,
            roster: None,
            presence_frame: None,
            deferred: Vec::new(),
            effects: Vec::new(),
        };
        tokio::spawn(run(state, link.map(Replica::new), tick, rx, shutdown));
        Hub { tx }
    }

    /// Sends a command; false if the hub has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// Sends a command if the hub's queue has room now: `Err` gives it
    /// back when the queue is full (await [`Hub::send`] then), `Ok(false)`
    /// if the hub has stopped.
    pub fn try_send(&self, command: Command) -> Result<bool, Command> {
        match self.tx.try_send(command) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(command)) => Err(command),
            Err(TrySendError::Closed(_)) => Ok(false),
        }
    }
}

/// The wall clock, in Unix milliseconds: read here, passed into the core.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the hub task owns.
struct State {
    core: Core,
    limits: Limits,
    /// This relay's greeted connections.
    conns: IdMap<ConnId, ConnHandle>,
    metrics: Arc<Metrics>,
    /// Shutdown has begun: new connections are sent away.
    closing: bool,
    /// The core's current roster, encoded once for all its welcomes.
    roster: Option<(Arc<Roster>, EncodedRoster)>,
    /// The last presence frame sent, shared with every recipient's queue
    /// until that recipient has written it: unique once all have.
    presence_frame: Option<Bytes>,
    /// Frames held back until the hub has let the other connections run:
    /// a posted message's copy for the posting tab, and whatever follows
    /// it for that tab in the same turn ([`State::dispatch`]). Only after
    /// a lone command, so it holds a few frames at most.
    deferred: Vec<(ConnId, Message)>,
    /// The vector the core's effects are taken in, empty between turns
    /// ([`Core::swap_outbound`]).
    effects: Vec<Outbound>,
}

/// What the hub keeps in cluster mode.
struct Replica {
    link: HubLink,
    /// The number of the last event applied from each relay.
    applied: HashMap<u64, u64>,
    /// Every relay's live connections, as the log tells them.
    by_relay: HashMap<u64, BTreeSet<ConnId>>,
    /// The latest time in the log so far: the core's clock.
    now: Millis,
    /// The id of the last log entry applied.
    last_id: String,
    /// The entry the last snapshot was written at.
    snapshot_id: String,
}

impl Replica {
    fn new(link: HubLink) -> Self {
        Replica {
            link,
            applied: HashMap::new(),
            by_relay: HashMap::new(),
            now: 0,
            last_id: String::new(),
            snapshot_id: String::new(),
        }
    }

    fn appender(&self) -> &Appender {
        &self.link.appender
    }
}

async fn run(
    mut state: State,
    mut replica: Option<Replica>,
    tick: Duration,
    mut rx: queue::Receiver<Command>,
    mut shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let local = replica.is_none();
    let every = replica
        .as_ref()
        .map_or(Duration::from_secs(3600), |r| r.link.snapshot_interval);
    let mut snapshots = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Made once, not in every turn: a turn per command at most costs the
    // registration of a timer and of a shutdown waiter otherwise.
    let shutdown = shutdown.recv();
    tokio::pin!(shutdown);
    let presence_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(presence_timer);
    let mut presence_armed = None;
    loop {
        // A presence batch goes out as soon as it may (SPEC U4), not at the
        // next beat of the ticker.
        let presence_at = state.presence_at(now_millis()).filter(|_| local);
        if let Some(at) = presence_at.filter(|at| presence_armed != Some(*at)) {
            presence_timer.as_mut().reset(deadline_of_millis(at));
            presence_armed = Some(at);
        }
        // A lone command: the runtime has threads asleep, and the posting
        // tab's copy waits its turn (`State::dispatch`).
        let mut lone = false;
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else { break };
                state.command(command, replica.as_mut()).await;
                // Drain what else is waiting before writing, so bursts batch.
                lone = true;
                while let Some(command) = rx.try_recv() {
                    state.command(command, replica.as_mut()).await;
                    lone = false;
                }
            }
            from_log = next_events(&mut replica) => {
                let (Some(from_log), Some(replica)) = (from_log, replica.as_mut()) else { break };
                match from_log {
                    FromLog::Events(events) => {
                        for (id, event) in events {
                            state.event(replica, event);
                            replica.last_id = id;
                        }
                    }
                    FromLog::Resync { snapshot, stale } => state.resync(replica, *snapshot, stale),
                }
            }
            _ = snapshots.tick(), if !local => {
                if let Some(replica) = replica.as_mut() {
                    state.snapshot(replica);
                }
            }
            // In cluster mode time advances by the log's ticks.
            _ = ticker.tick(), if local => {
                let now = now_millis();
                state.core.expire(now);
                state.send_presence(now);
            }
            () = &mut presence_timer, if presence_at.is_some() => {
                presence_armed = None;
                state.send_presence(now_millis());
            }
            // Everything applied so far was dispatched at the end of the
            // last turn, so each close order comes after those frames.
            () = &mut shutdown, if !state.closing => {
                state.closing = true;
                state.close_all();
            }
        }
        loop {
            let mut slow = state.dispatch(std::mem::take(&mut lone));
            if slow.is_empty() && !state.deferred.is_empty() {
                // The recipients' tasks, woken by their copies, write them
                // before the posting tabs' confirmations are queued.
                tokio::task::yield_now().await;
                slow = state.release_deferred();
            }
            if slow.is_empty() {
                break;
            }
            for conn in slow {
                state.drop_slow(conn, replica.as_mut()).await;
            }
        }
        // As the core does with its own tables (`Core::tick`).
        release_if_empty(&mut state.conns);
        let metrics = &state.metrics;
        metrics
            .online_users
            .store(state.core.online_count() as u64, Ordering::Relaxed);
        metrics
            .conversations
            .store(state.core.conversation_count() as u64, Ordering::Relaxed);
        metrics
            .messages_relayed
            .store(state.core.messages_stamped(), Ordering::Relaxed);
    }
    debug!("hub stopped");
}

/// Orders a connection closed with 1012: the relay is going away, or the
/// client must reconnect to be seen again.
fn send_restart(handle: ConnHandle) {
    let _ = handle
        .close
        .send(CloseOrder::Close(close_code::SERVICE_RESTART, RESTARTING));
}

/// Puts a frame in a connection's queue, counting it; false if the queue
/// is full (the connection is too slow). A connection already gone takes
/// nothing and is not slow.
fn offer(metrics: &Metrics, handle: &ConnHandle, frame: Message) -> bool {
    match handle.out.try_send(frame) {
        Ok(()) => {
            metrics.frames_sent.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Full(_)) => false,
        Err(TrySendError::Closed(_)) => true,
    }
}

/// How often a relay waiting for its last presence frame to be written
/// looks again, in milliseconds.
const WRITTEN_POLL: Millis = 5;

/// When a presence batch due at `due` goes, given whether the last one has
/// been written to every recipient: at `due` if it has; otherwise at the
/// next look after `due`, or at `due + interval` at the latest.
fn presence_time(due: Millis, written: bool, now: Millis, interval: Millis) -> Millis {
    if written {
        due
    } else {
        (now + WRITTEN_POLL).clamp(due, due + interval)
    }
}

/// When a batch the core says is `due` (by its clock, in whole
/// milliseconds) goes on the real clock: one millisecond later, unless it
/// is due at once. The core recorded the last batch's time rounded down,
/// so a batch one interval after it by the core's clock could go up to a
/// millisecond early, and ten such gaps fit in under a second: eleven
/// frames in a client's second at the 100 ms default (SPEC U4 allows ten).
/// One millisecond more keeps every gap at least the interval.
fn full_interval(due: Millis) -> Millis {
    if due == 0 {
        0
    } else {
        due + 1
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The moment on the runtime's clock when the wall clock reads `at` (Unix
/// milliseconds): not before, so that [`now_millis`] on waking is `at` or
/// later.
fn deadline_of_millis(at: Millis) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_millis()))
}

/// The next batch read from the cluster's log; never, on a single relay.
async fn next_events(replica: &mut Option<Replica>) -> Option<FromLog> {
    match replica {
        Some(replica) => replica.link.events.recv().await,
        None => std::future::pending().await,
    }
}

impl State {
    /// When this relay sends the pending presence batch, if one is
    /// pending: when the core's rule allows (SPEC U4), once every recipient
    /// has written the last batch's frame, and one more batch interval
    /// later at the latest. A relay behind on its writes thus sends fewer,
    /// larger batches instead of queueing one behind another.
    fn presence_at(&self, now: Millis) -> Option<Millis> {
        let due = full_interval(self.core.presence_due()?);
        let written = self.presence_frame.as_ref().is_none_or(Bytes::is_unique);
        Some(presence_time(
            due,
            written,
            now,
            millis(self.limits.presence_batch),
        ))
    }

    /// Sends the pending presence batch if [`State::presence_at`] says so.
    fn send_presence(&mut self, now: Millis) {
        if self.presence_at(now).is_some_and(|at| at <= now) {
            self.core.send_presence(now);
            self.presence_frame = None;
        }
    }

    /// Takes one command from this relay; once `closing`, new connections
    /// are sent away and frames are dropped unstamped. The command becomes
    /// an event: applied now on a single relay, appended to the log in
    /// cluster mode.
    async fn command(&mut self, command: Command, replica: Option<&mut Replica>) {
        let kind = match command {
            Command::Connect { handle, .. } if self.closing => {
                send_restart(handle);
                return;
            }
            Command::Frame { .. } if self.closing => return,
            Command::Connect {
                conn,
                session,
                user,
                resume,
                handle,
            } => {
                self.conns.insert(conn, handle);
                EventKind::Connect {
                    conn: conn.0,
                    session: session.0,
                    user,
                    resume,
                }
            }
            // In cluster mode a heartbeat changes nothing shared: answered
            // here, so clients stay connected while Redis is away.
            Command::Frame {
                conn,
                msg: ClientMsg::Ping { nonce },
            } if replica.is_some() => {
                if let Some(handle) = self.conns.get(&conn) {
                    let pong = Message::text(ServerMsg::Pong { nonce }.encode());
                    // A full queue: the next frame that needs it drops the client.
                    let _ = offer(&self.metrics, handle, pong);
                }
                return;
            }
            Command::Frame { conn, msg } => EventKind::Frame { conn: conn.0, msg },
            Command::Disconnect { conn } => {
                self.conns.remove(&conn);
                EventKind::Disconnect { conn: conn.0 }
            }
            Command::EndSession { session } => EventKind::EndSession { session: session.0 },
        };
        self.submit(kind, replica).await;
    }

    /// An event of this relay: applied to the core now (single relay), or
    /// appended to the log and applied when read back (cluster).
    async fn submit(&mut self, kind: EventKind, replica: Option<&mut Replica>) {
        match replica {
            None => self.apply(kind, now_millis()),
            Some(replica) => {
                replica.appender().append(kind).await;
            }
        }
    }

    /// Feeds one event to the core at `now`. `relay_gone` is the log's
    /// business ([`State::event`]), not the core's.
    fn apply(&mut self, kind: EventKind, now: Millis) {
        match kind {
            EventKind::Connect {
                conn,
                session,
                user,
                resume,
            } => self
                .core
                .connect(ConnId(conn), SessionId(session), user, &resume, now),
            EventKind::Frame { conn, msg } => self.core.frame(ConnId(conn), msg, now),
            EventKind::Disconnect { conn } => self.core.disconnect(ConnId(conn), now),
            EventKind::EndSession { session } => self.core.end_session(SessionId(session), now),
            EventKind::Tick => self.core.tick(now),
            EventKind::RelayGone { .. } => {}
        }
    }

    /// Applies one event of the cluster's log, unless it is a duplicate,
    /// keeping track of which relay holds which connection.
    fn event(&mut self, replica: &mut Replica, event: Event) {
        let last = replica.applied.entry(event.relay).or_insert(0);
        if event.n <= *last {
            return;
        }
        if *last != 0 && event.n != *last + 1 {
            warn!(
                relay = event.relay,
                missing = event.n - *last - 1,
                "events of a relay are missing from the log"
            );
            self.metrics.log_gaps.fetch_add(1, Ordering::Relaxed);
        }
        *last = event.n;
        replica.now = replica.now.max(event.now);
        let now = replica.now;
        match &event.kind {
            EventKind::Connect { conn, .. } => {
                replica
                    .by_relay
                    .entry(cluster::relay_of(*conn))
                    .or_default()
                    .insert(ConnId(*conn));
            }
            EventKind::Disconnect { conn } => {
                if let Some(conns) = replica.by_relay.get_mut(&cluster::relay_of(*conn)) {
                    conns.remove(&ConnId(*conn));
                }
            }
            EventKind::RelayGone { relay } => {
                if *relay == replica.link.relay {
                    // The cluster took this relay for dead (Redis lost for
                    // longer than the TTL): its clients are gone from every
                    // core, so they reconnect to be seen again.
                    warn!("the cluster took this relay for dead: reconnecting its clients");
                    self.close_all();
                }
                for conn in replica.by_relay.remove(relay).unwrap_or_default() {
                    self.core.disconnect(conn, now);
                }
            }
            _ => {}
        }
        self.apply(event.kind, now);
    }

    /// Takes the state of a cluster snapshot.
    fn resync(&mut self, replica: &mut Replica, snapshot: Snapshot<Core>, stale: bool) {
        if stale {
            // What these clients saw may not be in the snapshot's history.
            self.close_all();
        }
        self.core = snapshot.core;
        self.core.set_limits(self.limits.clone());
        replica.applied = snapshot.applied;
        replica.by_relay = snapshot.by_relay;
        replica.now = snapshot.now;
        replica.last_id.clone_from(&snapshot.last_id);
        replica.snapshot_id = snapshot.last_id;
    }

    /// The leader hands its state to be written, when the log has moved
    /// since the last snapshot.
    fn snapshot(&self, replica: &mut Replica) {
        if !replica.link.leader.load(Ordering::Relaxed)
            || replica.last_id.is_empty()
            || replica.last_id == replica.snapshot_id
        {
            return;
        }
        let snapshot = Snapshot {
            last_id: replica.last_id.clone(),
            now: replica.now,
            applied: replica.applied.clone(),
            by_relay: replica.by_relay.clone(),
            core: &self.core,
        };
        match serde_json::to_string(&snapshot) {
            Ok(json) => {
                // A snapshot still being written: skip this one.
                let _ = replica
                    .link
                    .snapshots
                    .try_send((replica.last_id.clone(), json));
                replica.snapshot_id.clone_from(&replica.last_id);
            }
            Err(e) => warn!(error = %e, "the state could not be encoded for a snapshot"),
        }
    }

    /// Orders every connection closed with 1012 (shutdown).
    fn close_all(&mut self) {
        for (_, handle) in self.conns.drain() {
            send_restart(handle);
        }
    }

    /// A connection whose queue was full: gone here at once; for the core
    /// now (one relay) or when the log says so (cluster).
    async fn drop_slow(&mut self, conn: ConnId, replica: Option<&mut Replica>) {
        let Some(handle) = self.conns.remove(&conn) else {
            return;
        };
        warn!(conn = conn.0, "outbound queue full: dropping a slow client");
        self.metrics.queue_drops.fetch_add(1, Ordering::Relaxed);
        let _ = handle.close.send(CloseOrder::SlowConsumer);
        self.submit(EventKind::Disconnect { conn: conn.0 }, replica)
            .await;
    }

    /// Delivers the core's effects to this relay's connections; returns
    /// the connections whose queue was full.
    ///
    /// After a lone command (`hold_posts`), a posted message's copy for the
    /// posting tab (the core lists it first) is held back in `deferred`,
    /// with everything after it for that tab, until the hub has let the
    /// recipients' tasks run ([`State::release_deferred`]). Queued at once,
    /// it would wake the posting tab's task before a recipient's; the
    /// runtime runs the task woken last next on this thread and hands the
    /// other to a sleeping thread, which it wakes first: unloaded, that
    /// wake-up sat in front of the recipient's copy (p50 about 100 µs
    /// longer). Busy turns queue everything at once: their threads are
    /// awake, and holding back a flood of frames for one tab would pour
    /// them into its queue together.
    fn dispatch(&mut self, hold_posts: bool) -> Vec<ConnId> {
        let mut slow = Vec::new();
        let mut effects = std::mem::take(&mut self.effects);
        self.core.swap_outbound(&mut effects);
        for effect in effects.drain(..) {
            match effect {
                Outbound::Send { to, msg } => {
                    let hold_first =
                        hold_posts && matches!(msg, ServerMsg::Message { .. }) && to.len() > 1;
                    // Serialized once, and only if someone here gets it;
                    // each recipient's frame shares the bytes.
                    let mut frame = None;
                    for (i, conn) in to.into_iter().enumerate() {
                        let Some(handle) = self.conns.get(&conn) else {
                            continue;
                        };
                        let frame = frame.get_or_insert_with(|| {
                            if let ServerMsg::Error { kind, .. } = &msg {
                                self.metrics.error(*kind);
                            }
                            Message::text(msg.encode())
                        });
                        if (i == 0 && hold_first) || self.holds(conn) {
                            self.deferred.push((conn, frame.clone()));
                        } else if !offer(&self.metrics, handle, frame.clone()) {
                            slow.push(conn);
                        }
                    }
                    if let (Some(Message::Text(text)), ServerMsg::Presence { .. }) = (frame, &msg) {
                        self.presence_frame = Some(Bytes::from(text));
                    }
                }
                Outbound::Welcome { conn, welcome } => {
                    let Some(handle) = self.conns.get(&conn) else {
                        continue;
                    };
                    let encoded = match &self.roster {
                        Some((roster, encoded)) if Arc::ptr_eq(roster, &welcome.roster) => encoded,
                        _ => {
                            let encoded = EncodedRoster::new(&welcome.roster.online);
                            &self.roster.insert((welcome.roster.clone(), encoded)).1
                        }
                    };
                    let frame = Message::text(encoded.welcome(&welcome.me, &welcome.conversations));
                    if self.holds(conn) {
                        self.deferred.push((conn, frame));
                    } else if !offer(&self.metrics, handle, frame) {
                        slow.push(conn);
                    }
                }
                Outbound::Close { conn, code, reason } => {
                    // What was queued for it goes before the close.
                    if self.holds(conn) {
                        slow.extend(self.release_deferred());
                    }
                    if let Some(handle) = self.conns.remove(&conn) {
                        let _ = handle.close.send(CloseOrder::Close(code, reason));
                    }
                }
            }
        }
        // Kept for the next turn, unless a burst made it large.
        effects.shrink_to(EFFECTS_KEPT);
        self.effects = effects;
        slow.sort();
        slow.dedup();
        slow
    }

    /// Queues the frames [`State::dispatch`] held back, in order; returns
    /// the connections whose queue was full.
    fn release_deferred(&mut self) -> Vec<ConnId> {
        let mut slow = Vec::new();
        for (conn, frame) in std::mem::take(&mut self.deferred) {
            if let Some(handle) = self.conns.get(&conn) {
                if !slow.contains(&conn) && !offer(&self.metrics, handle, frame) {
                    slow.push(conn);
                }
            }
        }
        slow
    }

    /// Whether frames for `conn` are held back this turn.
    fn holds(&self, conn: ConnId) -> bool {
        self.deferred.iter().any(|(c, _)| *c == conn)
    }
}

#[cfg(test)]
mod tests {
    use super::{full_interval, presence_time};

    /// SPEC U4: batches one after another are at least one interval apart
    /// on the real clock, wherever within its millisecond the last one
    /// went; so a second holds at most ten at the 100 ms default.
    #[test]
    fn u4_batches_are_a_full_interval_apart_on_the_real_clock() {
        let interval = 100;
        // The last batch went at `sent_us` (microseconds); the core
        // recorded the wall clock's milliseconds, rounded down.
        for sent_us in (1_000_000..1_001_000).step_by(37) {
            let recorded = sent_us / 1_000;
            // The hub's timer wakes once the wall clock reads the time.
            let next_us = full_interval(recorded + interval) * 1_000;
            assert!(
                next_us >= sent_us + interval * 1_000,
                "a batch {} µs after the last",
                next_us - sent_us
            );
            // Ten gaps take at least a second: no eleventh frame in it.
            assert!(10 * (next_us - sent_us) >= 1_000_000);
        }
        assert_eq!(full_interval(0), 0, "after a quiet spell: at once");
    }

    /// SPEC U4: a batch goes when due if the last one has been written to
    /// every recipient; a relay behind on its writes holds it until then,
    /// one more interval at most.
    #[test]
    fn u4_a_batch_waits_for_the_last_to_be_written_one_interval_at_most() {
        assert_eq!(
            presence_time(1_000, true, 900, 100),
            1_000,
            "written: when due"
        );
        assert_eq!(
            presence_time(1_000, true, 1_050, 100),
            1_000,
            "written, overdue: now"
        );
        assert_eq!(
            presence_time(1_000, false, 900, 100),
            1_000,
            "not due yet: look when due"
        );
        assert_eq!(
            presence_time(1_000, false, 1_040, 100),
            1_045,
            "unwritten: look again soon"
        );
        assert_eq!(
            presence_time(1_000, false, 1_098, 100),
            1_100,
            "one more interval at most"
        );
        assert_eq!(
            presence_time(1_000, false, 1_300, 100),
            1_100,
            "one more interval at most"
        );
    }
}
