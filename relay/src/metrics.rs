//! Counters and gauges for `GET /metrics`, in the Prometheus text format
//! (SPEC O2). Plain atomics: updated on hot paths without locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use shared::protocol::ErrorKind;

/// WebSocket connections open in this process, over every relay it runs
/// (tests run several in one), and how many times that count fell to
/// zero: the binary gives the allocator's free memory back while no
/// connection is open (`relay/src/main.rs`).
#[derive(Debug)]
pub struct ProcessConnections {
    open: AtomicU64,
    emptied: AtomicU64,
}

/// This process's [`ProcessConnections`].
pub static PROCESS_CONNECTIONS: ProcessConnections = ProcessConnections {
    open: AtomicU64::new(0),
    emptied: AtomicU64::new(0),
};

impl ProcessConnections {
    /// A connection opened.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed.
    pub fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.emptied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// While no connection is open: how many times the count fell to zero
    /// (a new number for every time everyone has left).
    pub fn idle(&self) -> Option<u64> {
        (self.open.load(Ordering::Relaxed) == 0).then(|| self.emptied.load(Ordering::Relaxed))
    }
}

/// What a thread the relay starts itself (the store's) runs each second
/// it has nothing to do. The
/// binary sets it to give the allocator's free memory back while no
/// connection is open (`relay/src/main.rs`): blocks the store's thread
/// allocated and other threads freed wait in its pages until it collects.
pub static ON_THREAD_IDLE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Every figure the relay exposes.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections (greeted or not).
    pub connections: AtomicU64,
    /// Users online, grace period included.
    pub online_users: AtomicU64,
    /// Conversations held in memory.
    pub conversations: AtomicU64,
    /// Messages stamped and relayed.
    pub messages_relayed: AtomicU64,
    /// Frames written to clients' queues.
    pub frames_sent: AtomicU64,
    /// Connections dropped because their outbound queue was full (SPEC L6).
    pub queue_drops: AtomicU64,
    /// Connections dropped for silence (SPEC U2).
    pub heartbeat_drops: AtomicU64,
    /// Sign-ins refused by the throttle (SPEC S3).
    pub throttled_logins: AtomicU64,
    /// Cluster mode: failed calls to Redis.
    pub redis_errors: AtomicU64,
    /// Cluster mode: 1 while Redis answers, 0 while it does not.
    pub redis_up: AtomicU64,
    /// Cluster mode: times events of a relay were found missing in the log.
    pub log_gaps: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
}

impl Metrics {
    /// A WebSocket connection opened: counted for this relay and for the
    /// process ([`PROCESS_CONNECTIONS`]).
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        PROCESS_CONNECTIONS.opened();
    }

    /// A WebSocket connection closed.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        PROCESS_CONNECTIONS.closed();
    }

    /// Counts one error frame of this kind.
    pub fn error(&self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count of error frames of this kind so far.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP chat_{name} {help}\n# TYPE chat_{name} {kind}");
            let _ = writeln!(out, "chat_{name} {}", value.load(Ordering::Relaxed));
        };
        put(
            "connections",
            "gauge",
            "Open WebSocket connections.",
            &self.connections,
        );
        put(
            "online_users",
            "gauge",
            "Users online, grace period included.",
            &self.online_users,
        );
        put(
            "conversations",
            "gauge",
            "Conversations held in memory.",
            &self.conversations,
        );
        put(
            "messages_relayed_total",
            "counter",
            "Messages stamped and relayed.",
            &self.messages_relayed,
        );
        put(
            "frames_sent_total",
            "counter",
            "Frames queued to clients.",
            &self.frames_sent,
        );
        put(
            "queue_drops_total",
            "counter",
            "Connections dropped for a full outbound queue.",
            &self.queue_drops,
        );
        put(
            "heartbeat_drops_total",
            "counter",
            "Connections dropped for silence.",
            &self.heartbeat_drops,
        );
        put(
            "throttled_logins_total",
            "counter",
            "Sign-ins refused by the throttle.",
            &self.throttled_logins,
        );
        put(
            "redis_errors_total",
            "counter",
            "Cluster mode: failed calls to Redis.",
            &self.redis_errors,
        );
        put(
            "redis_up",
            "gauge",
            "Cluster mode: 1 while Redis answers.",
            &self.redis_up,
        );
        put(
            "log_gaps_total",
            "counter",
            "Cluster mode: times events of a relay were missing from the log.",
            &self.log_gaps,
        );
        let _ = writeln!(
            out,
            "# HELP chat_errors_total Error frames sent, by kind.\n# TYPE chat_errors_total counter"
        );
        for (kind, count) in ErrorKind::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "chat_errors_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_errors_by_kind() {
        let m = Metrics::default();
        m.connections.store(3, Ordering::Relaxed);
        m.error(ErrorKind::SlowDown);
        m.error(ErrorKind::SlowDown);
        let text = m.render();
        assert!(
            text.contains("# TYPE chat_connections gauge\nchat_connections 3\n"),
            "{text}"
        );
        assert!(
            text.contains("chat_errors_total{kind=\"slow_down\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("chat_errors_total{kind=\"bad_frame\"} 0\n"),
            "{text}"
        );
        assert_eq!(m.errors_of(ErrorKind::SlowDown), 2);
    }
}
