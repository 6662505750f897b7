//! Cluster mode (SPEC O4): any number of relays serve one chat through one
//! Redis.
//!
//! Every relay runs the same deterministic [`Core`](crate::core::Core) and
//! feeds it the same events in the same order: the cluster's **event log**,
//! one Redis stream. A relay never applies what its own clients do directly;
//! it appends the event to the log and applies it when it reads it back,
//! exactly like every other relay. So presence, conversations, sequence
//! numbers and history are the same on every relay (a replicated state
//! machine over a totally ordered log); a message is confirmed to its sender
//! only once it is in Redis; and each relay delivers the core's frames to
//! the connections it holds itself. The domain code is the same in both
//! modes: only where the hub's events come from changes.
//!
//! - **Time**: events carry the appending relay's clock, and the hub feeds
//!   the core the largest time seen so far, so every relay sees the same
//!   times. Grace periods, typing expiry and presence batches advance on
//!   `tick` events, appended every presence batch interval by one relay at
//!   a time: the **leader**, holder of a lease key.
//! - **Dead relays**: each relay refreshes a key with a TTL (`--relay-ttl`).
//!   The leader appends `relay_gone` for a relay whose key has expired, and
//!   every core drops that relay's connections; their users go offline
//!   after the grace, like anyone whose tabs closed. No ghosts.
//! - **Duplicates and gaps**: events carry (relay, number); an append
//!   retried after an error that hid its success is dropped when read
//!   again. The log is read from the last id seen, so a relay that lost
//!   Redis for a while reads what it missed, in order, when it is back.
//! - **Redis failures**: appends wait and are retried in order; readers
//!   reconnect and continue from where they were; local clients stay
//!   connected throughout (pings are answered locally). `/healthz` says
//!   `degraded` and `chat_redis_errors_total` counts the failures.
//! - **Snapshots**: the leader's hub writes its whole state, with the id
//!   of the last entry it applied, every `--snapshot-interval`, and trims
//!   the log to `--log-retention` before it: the log stays bounded. A
//!   joining relay starts from the snapshot and reads the log after it, so
//!   it holds the same state as the others before its own clients' events
//!   come back. A relay that finds the log trimmed past where it stopped
//!   reading (away from Redis for longer than the retention) starts again
//!   from the snapshot and has its clients reconnect.
//!
//! Accounts and sessions live in Redis too ([`store::RedisStore`]), and so
//! do the counts of failed sign-ins ([`throttle::SharedThrottle`]).

pub mod store;
pub mod throttle;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncCommands, Client, IntoConnectionInfo, RedisError, Script};
use serde::{Deserialize, Serialize};
use shared::protocol::{ClientMsg, Resume, User};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::core::{ConnId, Core, Millis};
use crate::hub::now_millis;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Every key the cluster uses starts with this.
pub const PREFIX: &str = "chat:";
/// Connection ids carry their relay's number in the bits above these.
pub const CONN_BITS: u32 = 40;
/// Events read from the log per round trip, at most.
const READ_BATCH: usize = 1024;
/// How long one blocking read waits for new events.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Events appended per round trip, at most.
const APPEND_BATCH: usize = 512;
/// Events waiting to be appended before the hub waits too.
pub const APPEND_QUEUE: usize = 65_536;
/// Batches read but not yet applied by the hub.
const APPLY_QUEUE: usize = 64;
/// The first wait before retrying Redis, doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The relay a connection id belongs to.
pub fn relay_of(conn: u64) -> u64 {
    conn >> CONN_BITS
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The relay that appended it.
    pub relay: u64,
    /// That relay's count of its appends: strictly increasing, so a
    /// duplicate is recognised.
    pub n: u64,
    /// The appending relay's clock, in Unix milliseconds.
    pub now: Millis,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, in the terms of the core's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A connection said `hello`.
    Connect {
        /// The connection (its relay in the high bits).
        conn: u64,
        /// Its browser's session.
        session: u64,
        /// Its user.
        user: User,
        /// Where it left off.
        resume: Vec<Resume>,
    },
    /// A frame after `hello`.
    Frame {
        /// From where.
        conn: u64,
        /// What.
        msg: ClientMsg,
    },
    /// A connection is gone.
    Disconnect {
        /// Which.
        conn: u64,
    },
    /// A session ended (log out on any relay).
    EndSession {
        /// Which.
        session: u64,
    },
    /// Time passed.
    Tick,
    /// A relay stopped refreshing its key: its connections are gone.
    RelayGone {
        /// Which.
        relay: u64,
    },
}

/// What the hub needs to run in cluster mode.
#[derive(Debug)]
pub struct HubLink {
    /// This relay's number.
    pub relay: u64,
    /// Where the hub appends events.
    pub appender: Appender,
    /// What the log reader found, in log order.
    pub events: mpsc::Receiver<FromLog>,
    /// True while this relay leads: its hub writes the snapshots.
    pub leader: Arc<AtomicBool>,
    /// Where the hub hands its snapshots to be written: the last entry
    /// id and the encoded [`Snapshot`].
    pub snapshots: mpsc::Sender<(String, String)>,
    /// How often the leader's hub writes a snapshot.
    pub snapshot_interval: Duration,
}

/// What the log reader hands the hub.
#[derive(Debug)]
pub enum FromLog {
    /// Entries of the log, in order, with their ids.
    Events(Vec<(String, Event)>),
    /// Start over from this state. `stale`: this relay had fallen behind
    /// the trimmed log, so what its clients saw may differ; they reconnect.
    Resync {
        /// The state to take.
        snapshot: Box<Snapshot<Core>>,
        /// Whether local clients must reconnect.
        stale: bool,
    },
}

/// A relay's whole replicated state at one point of the log: `C` is the
/// core (borrowed to write, owned when read).
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot<C> {
    /// The id of the last log entry applied.
    pub last_id: String,
    /// The log's time at that entry.
    pub now: Millis,
    /// The number of the last event applied from each relay.
    pub applied: HashMap<u64, u64>,
    /// Every relay's live connections.
    pub by_relay: HashMap<u64, BTreeSet<ConnId>>,
    /// The domain state.
    pub core: C,
}

/// A handle to append events to the log, in order.
#[derive(Debug, Clone)]
pub struct Appender {
    tx: mpsc::Sender<(Millis, EventKind)>,
}

impl Appender {
    /// Queues an event stamped with this relay's clock; waits while the
    /// queue is full (Redis away for long). False once the relay stops.
    pub async fn append(&self, kind: EventKind) -> bool {
        self.tx.send((now_millis(), kind)).await.is_ok()
    }
}

/// Cluster-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A relay that has not refreshed its key for this long is gone.
    pub relay_ttl: Duration,
    /// The leader appends a tick this often.
    pub tick: Duration,
    /// The leader writes a snapshot this often (when the log moved).
    pub snapshot_interval: Duration,
    /// Log entries older than this before the latest snapshot are trimmed.
    pub log_retention: Duration,
}

/// This relay's membership of the cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    relay: u64,
    client: Client,
    redis: ConnectionManager,
}

impl Cluster {
    /// Connects to Redis at `url` and takes a fresh relay number.
    pub async fn join(url: &str) -> Result<Cluster, String> {
        // Events are small and latency matters: no Nagle delay.
        let info = url
            .into_connection_info()
            .map_err(|e| format!("--redis {url}: {e}"))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info).map_err(|e| format!("--redis {url}: {e}"))?;
        let mut redis = manager(&client)
            .await
            .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
        let relay: u64 = redis
            .incr(key("relays"), 1)
            .await
            .map_err(|e| format!("Redis at {url}: {e}"))?;
        if relay >= 1 << (64 - CONN_BITS) {
            return Err("Redis: relay numbers are exhausted (reset the chat:relays key)".into());
        }
        info!(relay, "joined the cluster");
        Ok(Cluster {
            relay,
            client,
            redis,
        })
    }

    /// This relay's number.
    pub fn relay(&self) -> u64 {
        self.relay
    }

    /// A connection to Redis that reconnects by itself.
    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Starts the appender, the reader and the membership task; returns
    /// what the hub needs.
    pub fn start(&self, settings: Settings, metrics: Arc<Metrics>, shutdown: Shutdown) -> HubLink {
        let (append_tx, append_rx) = mpsc::channel(APPEND_QUEUE);
        let (events_tx, events) = mpsc::channel(APPLY_QUEUE);
        let (snapshots, snapshots_rx) = mpsc::channel(1);
        let snapshot_interval = settings.snapshot_interval;
        metrics.redis_up.store(1, Ordering::Relaxed);
        let health = Health { metrics };
        let appender = Appender { tx: append_tx };
        let leader = Arc::new(AtomicBool::new(false));
        tokio::spawn(append_loop(
            self.relay,
            self.redis.clone(),
            append_rx,
            health.clone(),
        ));
        tokio::spawn(read_loop(self.client.clone(), events_tx, health.clone()));
        tokio::spawn(write_snapshots(
            self.redis.clone(),
            snapshots_rx,
            settings.log_retention,
            health.clone(),
        ));
        tokio::spawn(membership(
            self.clone(),
            settings,
            appender.clone(),
            leader.clone(),
            health,
            shutdown,
        ));
        HubLink {
            relay: self.relay,
            appender,
            events,
            leader,
            snapshots,
            snapshot_interval,
        }
    }

    /// Leaves the cluster at shutdown: the relay's key goes at once, so the
    /// leader ends what is left of its connections without waiting for
    /// the TTL.
    pub async fn leave(&self) {
        let mut redis = self.redis.clone();
        let gone: Result<(), RedisError> = redis.del(relay_key(self.relay)).await;
        if let Err(e) = gone {
            warn!(error = %e, "could not remove this relay's key; it expires by itself");
        }
    }
}

/// The full name of a cluster key.
pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn relay_key(relay: u64) -> String {
    key(&format!("relay:{relay}"))
}

async fn manager(client: &Client) -> Result<ConnectionManager, RedisError> {
    manager_with(client, Duration::from_secs(5)).await
}

async fn manager_with(
    client: &Client,
    response: Duration,
) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response))
        .set_number_of_retries(1)
        .set_max_delay(RETRY_MAX);
    ConnectionManager::new_with_config(client.clone(), config).await
}

/// Reports Redis's state to `/healthz` and `/metrics`.
#[derive(Debug, Clone)]
struct Health {
    metrics: Arc<Metrics>,
}

impl Health {
    fn ok(&self) {
        if self.metrics.redis_up.swap(1, Ordering::Relaxed) == 0 {
            info!("Redis is back");
        }
    }

    fn failed(&self, what: &str, e: &RedisError) {
        self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
        if self.metrics.redis_up.swap(0, Ordering::Relaxed) == 1 {
            warn!(error = %e, "Redis failed while {what}; retrying");
        } else {
            debug!(error = %e, "Redis still failing while {what}");
        }
    }
}

/// Appends queued events in order, a batch per round trip; a failed batch
/// is retried whole (duplicates are dropped by the readers).
async fn append_loop(
    relay: u64,
    mut redis: ConnectionManager,
    mut rx: mpsc::Receiver<(Millis, EventKind)>,
    health: Health,
) {
    let log = key("log");
    let mut n = 0u64;
    let mut batch: Vec<String> = Vec::with_capacity(APPEND_BATCH);
    loop {
        if batch.is_empty() {
            let Some(first) = rx.recv().await else { return };
            let mut next = Some(first);
            while let Some((now, kind)) = next {
                n += 1;
                let event = Event {
                    relay,
                    n,
                    now,
                    kind,
                };
                match serde_json::to_string(&event) {
                    Ok(json) => batch.push(json),
                    Err(e) => warn!(error = %e, "an event could not be encoded"),
                }
                next = if batch.len() < APPEND_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
        }
        let mut pipe = redis::pipe();
        for event in &batch {
            pipe.cmd("XADD")
                .arg(&log)
                .arg("*")
                .arg("e")
                .arg(event)
                .ignore();
        }
        let mut wait = RETRY_MIN;
        loop {
            match pipe.query_async::<()>(&mut redis).await {
                Ok(()) => {
                    health.ok();
                    batch.clear();
                    break;
                }
                Err(e) => {
                    health.failed("appending to the log", &e);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Reads the log, forever, and hands each batch to the hub: from the
/// latest snapshot (or the log's start) on joining; after a failure, from
/// where it stopped, or from the snapshot again if the log was trimmed
/// past that point meanwhile.
async fn read_loop(client: Client, tx: mpsc::Sender<FromLog>, health: Health) {
    let log = key("log");
    let mut last = StreamId::ZERO;
    let mut wait = RETRY_MIN;
    let mut redis: Option<ConnectionManager> = None;
    // Check where to start: on joining, and after every failure.
    let mut check = true;
    let block_ms = u64::try_from(READ_BLOCK.as_millis()).unwrap_or(u64::MAX);
    loop {
        if tx.is_closed() {
            return;
        }
        let conn = match &mut redis {
            Some(conn) => conn,
            None => match manager_with(&client, READ_BLOCK * 2).await {
                Ok(conn) => redis.insert(conn),
                Err(e) => {
                    health.failed("connecting the log reader", &e);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                    continue;
                }
            },
        };
        if check {
            match start_point(conn, &log, last).await {
                Ok(None) => check = false,
                Ok(Some(snapshot)) => {
                    let stale = last != StreamId::ZERO;
                    if stale {
                        warn!("the log was trimmed past this relay: starting from the snapshot");
                    }
                    last = StreamId::parse(&snapshot.last_id).unwrap_or(StreamId::ZERO);
                    check = false;
                    let resync = FromLog::Resync {
                        snapshot: Box::new(snapshot),
                        stale,
                    };
                    if tx.send(resync).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    health.failed("reading the snapshot", &e);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        let reply: Result<Option<StreamReadReply>, RedisError> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&log)
            .arg(last.to_string())
            .query_async(conn)
            .await;
        let reply = match reply {
            Ok(reply) => {
                health.ok();
                wait = RETRY_MIN;
                reply
            }
            Err(e) => {
                health.failed("reading the log", &e);
                check = true;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
                continue;
            }
        };
        let Some(reply) = reply else { continue };
        let mut events = Vec::new();
        for stream in reply.keys {
            for entry in stream.ids {
                let decoded = entry
                    .get::<String>("e")
                    .ok_or_else(|| "no `e` field".to_string())
                    .and_then(|json| {
                        serde_json::from_str::<Event>(&json).map_err(|e| e.to_string())
                    });
                match decoded {
                    Ok(event) => events.push((entry.id.clone(), event)),
                    Err(e) => warn!(id = %entry.id, error = %e, "skipping an unreadable log entry"),
                }
                if let Some(id) = StreamId::parse(&entry.id) {
                    last = id;
                }
            }
        }
        if !events.is_empty() && tx.send(FromLog::Events(events)).await.is_err() {
            return;
        }
    }
}

/// Where to read from: `None` to go on after `last`; the snapshot to start
/// from when joining (`last` is zero) or when the log's first entry is past
/// `last` (trimmed meanwhile).
async fn start_point(
    redis: &mut ConnectionManager,
    log: &str,
    last: StreamId,
) -> Result<Option<Snapshot<Core>>, RedisError> {
    if last != StreamId::ZERO {
        let first: StreamRangeReply = redis.xrange_count(log, "-", "+", 1).await?;
        let first = first.ids.first().and_then(|e| StreamId::parse(&e.id));
        if first.is_none_or(|first| first <= last.next()) {
            return Ok(None);
        }
    }
    let json: Option<String> = redis.get(key("snapshot")).await?;
    let Some(json) = json else { return Ok(None) };
    match serde_json::from_str::<Snapshot<Core>>(&json) {
        Ok(snapshot) if StreamId::parse(&snapshot.last_id).is_some_and(|id| id > last) => {
            Ok(Some(snapshot))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            warn!(error = %e, "the cluster's snapshot is unreadable; reading the whole log");
            Ok(None)
        }
    }
}

/// Writes the leader's snapshots, then trims the log behind them.
async fn write_snapshots(
    mut redis: ConnectionManager,
    mut rx: mpsc::Receiver<(String, String)>,
    retention: Duration,
    health: Health,
) {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    while let Some((last_id, encoded)) = rx.recv().await {
        let Some(at) = StreamId::parse(&last_id) else {
            continue;
        };
        let keep_from = StreamId {
            ms: at.ms.saturating_sub(retention_ms),
            seq: 0,
        };
        let written: Result<(), RedisError> = redis::pipe()
            .set(key("snapshot"), encoded)
            .ignore()
            .cmd("XTRIM")
            .arg(key("log"))
            .arg("MINID")
            .arg(keep_from.to_string())
            .ignore()
            .query_async(&mut redis)
            .await;
        match written {
            Ok(()) => debug!(at = %at, "snapshot written"),
            Err(e) => health.failed("writing a snapshot", &e),
        }
    }
}

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    /// Before every entry.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `ms-seq`.
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one.
    fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Renews the lease if this relay holds it, or takes it if it is free.
/// Returns 1 if this relay holds the lease afterwards.
const LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
";

/// Keeps this relay's key fresh; while leader, appends ticks and declares
/// relays whose key has expired gone.
async fn membership(
    cluster: Cluster,
    settings: Settings,
    appender: Appender,
    leader: Arc<AtomicBool>,
    health: Health,
    mut shutdown: Shutdown,
) {
    let mut redis = cluster.redis.clone();
    let me = cluster.relay.to_string();
    let ttl_ms = u64::try_from(settings.relay_ttl.as_millis()).unwrap_or(u64::MAX);
    // Refresh well within the TTL; the lease lasts a few refreshes.
    let beat = (settings.relay_ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let lease_ms = u64::try_from((beat * 3).as_millis()).unwrap_or(u64::MAX);
    let lease = Script::new(LEASE);
    let mut beats = tokio::time::interval(beat);
    let mut ticks = tokio::time::interval(settings.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Declaring others gone needs this relay to have been leader, and
    // Redis to have answered, for a whole TTL: after an outage every relay
    // first gets the time to refresh its key.
    let mut trusted_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.recv() => return,
            _ = ticks.tick() => {
                if leader.load(Ordering::Relaxed) && !appender.append(EventKind::Tick).await {
                    return;
                }
            }
            _ = beats.tick() => {
                let refreshed: Result<(), RedisError> = async {
                    redis::pipe()
                        .cmd("SET").arg(relay_key(cluster.relay)).arg(1).arg("PX").arg(ttl_ms).ignore()
                        .cmd("SADD").arg(key("relay-ids")).arg(cluster.relay).ignore()
                        .query_async(&mut redis)
                        .await
                }
                .await;
                let held: Result<i64, RedisError> = match refreshed {
                    Ok(()) => lease.key(key("leader")).arg(&me).arg(lease_ms).invoke_async(&mut redis).await,
                    Err(e) => Err(e),
                };
                match held {
                    Ok(held) => {
                        health.ok();
                        let was = leader.swap(held == 1, Ordering::Relaxed);
                        if held == 1 && !was {
                            info!(relay = cluster.relay, "leading the cluster");
                            trusted_since = Some(tokio::time::Instant::now());
                        }
                        if held != 1 {
                            trusted_since = None;
                        }
                    }
                    Err(e) => {
                        health.failed("refreshing this relay's key", &e);
                        leader.store(false, Ordering::Relaxed);
                        trusted_since = None;
                        continue;
                    }
                }
                let trusted = trusted_since.is_some_and(|t| t.elapsed() >= settings.relay_ttl);
                if trusted {
                    if let Err(e) = sweep_gone(&mut redis, cluster.relay, &appender).await {
                        health.failed("looking for dead relays", &e);
                    }
                }
            }
        }
    }
}

/// Appends `relay_gone` for every known relay whose key has expired.
async fn sweep_gone(
    redis: &mut ConnectionManager,
    me: u64,
    appender: &Appender,
) -> Result<(), RedisError> {
    let mut ids: Vec<u64> = redis.smembers(key("relay-ids")).await?;
    ids.sort_unstable();
    let mut gone = Vec::new();
    for id in ids.into_iter().filter(|id| *id != me) {
        let alive: bool = redis.exists(relay_key(id)).await?;
        if !alive {
            gone.push(id);
        }
    }
    for relay in gone {
        info!(relay, "a relay stopped answering: ending its connections");
        if !appender.append(EventKind::RelayGone { relay }).await {
            return Ok(());
        }
        let _: () = redis.srem(key("relay-ids"), relay).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::UserId;

    #[test]
    fn events_round_trip_through_their_json() {
        let user = User {
            id: UserId(7),
            name: "bob".into(),
            color: "#123456".into(),
        };
        for kind in [
            EventKind::Connect {
                conn: (3 << CONN_BITS) | 9,
                session: u64::MAX,
                user,
                resume: vec![],
            },
            EventKind::Frame {
                conn: 1,
                msg: ClientMsg::Leave {
                    conversation: shared::protocol::ConversationId(4),
                },
            },
            EventKind::Disconnect { conn: 2 },
            EventKind::EndSession { session: 5 },
            EventKind::Tick,
            EventKind::RelayGone { relay: 3 },
        ] {
            let event = Event {
                relay: 3,
                n: 42,
                now: 1_700_000_000_000,
                kind,
            };
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(
                serde_json::from_str::<Event>(&json).unwrap(),
                event,
                "{json}"
            );
        }
    }

    #[test]
    fn connection_ids_name_their_relay() {
        assert_eq!(relay_of((5 << CONN_BITS) | 123), 5);
        assert_eq!(relay_of(123), 0, "single-relay ids belong to no relay");
    }
}
