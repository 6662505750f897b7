//! The relay's flags. Each flag also reads the environment variable named
//! `CHAT_` + the flag's name in capitals (`--offline-grace` ↔ `CHAT_OFFLINE_GRACE`).
//! Durations are written like `30s`, `500ms` or `2m`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::protocol::MAX_PARTICIPANTS;

use crate::core::Limits;

/// Chat relay: serves the app, the HTTP API and the WebSocket on one port.
#[derive(Debug, Clone, Parser)]
#[command(name = "relay", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Folder holding the built browser app (trunk's `dist/`).
    #[arg(long, env = "CHAT_STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,

    /// SQLite file that keeps accounts and sessions (`:memory:` keeps them in memory).
    #[arg(long, env = "CHAT_DB", default_value = "chat.db")]
    pub db: PathBuf,

    /// Redis URL for cluster mode (several relays sharing state).
    #[arg(long, env = "CHAT_REDIS")]
    pub redis: Option<String>,

    /// Cluster mode: a relay that has not refreshed its key in Redis for
    /// this long is taken for dead and its users' connections end.
    #[arg(long, env = "CHAT_RELAY_TTL", default_value = "15s", value_parser = parse_duration)]
    pub relay_ttl: Duration,

    /// Cluster mode: how often the leading relay writes the shared state to
    /// Redis and trims the event log behind it.
    #[arg(long, env = "CHAT_SNAPSHOT_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub snapshot_interval: Duration,

    /// Cluster mode: how much of the event log is kept before the latest
    /// snapshot; a relay away from Redis for longer starts over from the
    /// snapshot and its clients reconnect.
    #[arg(long, env = "CHAT_LOG_RETENTION", default_value = "10m", value_parser = parse_duration)]
    pub log_retention: Duration,

    /// How often the relay pings each connection.
    #[arg(long, env = "CHAT_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A connection silent for this long is dropped.
    #[arg(long, env = "CHAT_HEARTBEAT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// How long a user whose last connection is gone stays online.
    #[arg(long, env = "CHAT_OFFLINE_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub offline_grace: Duration,

    /// Origin allowed to open the WebSocket (repeatable; default: the page's own origin).
    #[arg(
        long = "allowed-origin",
        env = "CHAT_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Frames waiting to be written to one connection before it counts as
    /// a slow consumer and is disconnected.
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub outbound_queue: u32,

    /// How long shutdown waits for connections to close before giving up.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// A session unused for this long expires.
    #[arg(long, env = "CHAT_SESSION_IDLE", default_value = "7days", value_parser = parse_duration)]
    pub session_idle: Duration,

    /// Failed sign-ins per name within --login-window before the name is throttled.
    #[arg(long, env = "CHAT_LOGIN_FAILURES_PER_NAME", default_value_t = 5)]
    pub login_failures_per_name: u32,

    /// Failed sign-ins per client address within --login-window before it is throttled.
    #[arg(long, env = "CHAT_LOGIN_FAILURES_PER_ADDRESS", default_value_t = 20)]
    pub login_failures_per_address: u32,

    /// The window over which failed sign-ins are counted.
    #[arg(long, env = "CHAT_LOGIN_WINDOW", default_value = "15m", value_parser = parse_duration)]
    pub login_window: Duration,

    /// Sustained messages per second per user.
    #[arg(long, env = "CHAT_MESSAGE_RATE", default_value_t = 10.0)]
    pub message_rate: f64,

    /// Messages a user may send in a burst.
    #[arg(long, env = "CHAT_MESSAGE_BURST", default_value_t = 20.0)]
    pub message_burst: f64,

    /// Client processes (tabs) per user.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 32)]
    pub max_connections_per_user: usize,

    /// Conversations a user may hold open.
    #[arg(long, env = "CHAT_MAX_CONVERSATIONS_PER_USER", default_value_t = 100)]
    pub max_conversations_per_user: usize,

    /// Participants per conversation, the creator included.
    #[arg(long, env = "CHAT_MAX_PARTICIPANTS", default_value_t = 16)]
    pub max_participants: usize,

    /// Messages kept per conversation.
    #[arg(long, env = "CHAT_HISTORY", default_value_t = 1000)]
    pub history: usize,

    /// At most one presence frame per client per this interval.
    #[arg(long, env = "CHAT_PRESENCE_BATCH", default_value = "100ms", value_parser = parse_duration)]
    pub presence_batch: Duration,
}

impl Config {
    /// The defaults, as `relay` with no flags and no `CHAT_*` variables.
    /// Tests start from here and change what they need.
    pub fn defaults() -> Self {
        Config::parse_from(["relay"])
    }

    /// The limits the domain core enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            offline_grace: self.offline_grace,
            presence_batch: self.presence_batch,
            connections_per_user: self.max_connections_per_user,
            conversations_per_user: self.max_conversations_per_user,
            participants: self.max_participants,
            history: self.history,
            message_rate: self.message_rate,
            message_burst: self.message_burst,
        }
    }

    /// Checks what clap cannot: relations between flags, and flags whose
    /// feature this build does not have.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be more than 0".into());
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(format!(
                "--heartbeat-timeout ({}) must be longer than --heartbeat-interval ({})",
                humantime::format_duration(self.heartbeat_timeout),
                humantime::format_duration(self.heartbeat_interval)
            ));
        }
        if self.presence_batch.is_zero() {
            return Err("--presence-batch must be more than 0".into());
        }
        if !(self.message_rate > 0.0 && self.message_burst >= 1.0) {
            return Err("--message-rate must be more than 0 and --message-burst at least 1".into());
        }
        if self.max_participants < 2 || self.max_participants > MAX_PARTICIPANTS {
            return Err(format!(
                "--max-participants must be 2 to {MAX_PARTICIPANTS}"
            ));
        }
        if self.max_connections_per_user == 0
            || self.max_conversations_per_user == 0
            || self.history == 0
        {
            return Err("--max-connections-per-user, --max-conversations-per-user and --history must be at least 1".into());
        }
        if self.snapshot_interval.is_zero() {
            return Err("--snapshot-interval must be more than 0".into());
        }
        if self.relay_ttl < Duration::from_millis(100) {
            return Err("--relay-ttl must be at least 100ms".into());
        }
        Ok(())
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write durations like 30s, 500ms or 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::defaults();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(c.offline_grace, Duration::from_secs(10));
        assert!(c.allowed_origins.is_empty());
        assert_eq!(c.session_idle, Duration::from_secs(7 * 24 * 3600));
        let limits = c.limits();
        assert_eq!(limits.connections_per_user, 32);
        assert_eq!(limits.conversations_per_user, 100);
        assert_eq!(limits.participants, 16);
        assert_eq!(limits.history, 1000);
        assert_eq!((limits.message_rate, limits.message_burst), (10.0, 20.0));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn durations_and_repeated_origins_parse() {
        let c = Config::try_parse_from([
            "relay",
            "--heartbeat-timeout",
            "500ms",
            "--heartbeat-interval",
            "100ms",
            "--allowed-origin",
            "http://a.example",
            "--allowed-origin",
            "http://b.example",
        ])
        .unwrap();
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(500));
        assert_eq!(c.allowed_origins, ["http://a.example", "http://b.example"]);
    }

    #[test]
    fn bad_values_get_clear_errors() {
        let err = Config::try_parse_from(["relay", "--offline-grace", "soon"]).unwrap_err();
        assert!(err.to_string().contains("write durations like"), "{err}");
        let err = Config::try_parse_from(["relay", "--listen", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");

        let mut c = Config::defaults();
        c.heartbeat_timeout = c.heartbeat_interval;
        assert!(c.validate().unwrap_err().contains("--heartbeat-timeout"));
    }

    #[test]
    fn help_lists_every_spec_flag() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for flag in [
            "--listen",
            "--static-dir",
            "--db",
            "--redis",
            "--heartbeat-timeout",
            "--offline-grace",
            "--allowed-origin",
            "CHAT_LISTEN",
            "CHAT_OFFLINE_GRACE",
        ] {
            assert!(help.contains(flag), "relay --help lacks {flag}:\n{help}");
        }
    }
}
