//! The relay's flags. Each flag also reads the environment variable named
//! `CHAT_` + the flag's name in capitals (`--offline-grace` ↔ `CHAT_OFFLINE_GRACE`).
//! Durations are written like `30s`, `500ms` or `2m`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

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

    /// SQLite file that keeps accounts and sessions.
    #[arg(long, env = "CHAT_DB", default_value = "chat.db")]
    pub db: PathBuf,

    /// Redis URL for cluster mode (several relays sharing state).
    #[arg(long, env = "CHAT_REDIS")]
    pub redis: Option<String>,

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
}

impl Config {
    /// The defaults, as `relay` with no flags and no `CHAT_*` variables.
    /// Tests start from here and change what they need.
    pub fn defaults() -> Self {
        Config::parse_from(["relay"])
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
        if self.redis.is_some() {
            return Err("--redis: cluster mode is not available in this build yet; \
                 run without --redis for the single-relay mode"
                .into());
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
