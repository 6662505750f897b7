//! The relay's entry point: [`run`] serves every route on a listener until
//! the shutdown future resolves, then closes every connection cleanly.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::shutdown::{DrainGuard, Shutdown, Trigger};

/// The relay's shared state: a cheap handle that every route and connection
/// holds a clone of.
///
/// Each handle also keeps the relay's drain guard alive, so [`run`] returns
/// only once the last connection holding one has finished.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    shutdown: Shutdown,
    next_connection: AtomicU64,
    _drain: DrainGuard,
}

impl Relay {
    fn new(config: Config, trigger: &Trigger) -> Self {
        Relay {
            inner: Arc::new(Inner {
                config,
                shutdown: trigger.subscribe(),
                next_connection: AtomicU64::new(1),
                _drain: trigger.guard(),
            }),
        }
    }

    /// The flags this relay runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A listener for the shutdown signal.
    pub fn shutdown(&self) -> Shutdown {
        self.inner.shutdown.clone()
    }

    /// A fresh id for a new connection, used in log spans.
    pub fn next_connection_id(&self) -> u64 {
        self.inner.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// Serves the app, the API and the WebSocket on `listener` until `shutdown`
/// resolves; then stops accepting, tells every WebSocket client that the
/// relay is restarting (close code 1012) and returns once they are closed,
/// or after `--shutdown-timeout`.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    check_static_dir(&config.static_dir);
    let shutdown_timeout = config.shutdown_timeout;
    let trigger = Trigger::new();
    let relay = Relay::new(config, &trigger);
    let routes = crate::filters::routes(relay);

    let mut stop_accepting = trigger.subscribe();
    let server = tokio::spawn(
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move { stop_accepting.recv().await })
            .run(),
    );

    shutdown.await;
    info!("shutting down: closing connections");
    trigger.fire();
    let drained = tokio::time::timeout(shutdown_timeout, async {
        if let Err(e) = server.await {
            warn!(error = %e, "HTTP server task failed");
        }
        trigger.drain().await;
    })
    .await;
    match drained {
        Ok(()) => info!("shut down cleanly"),
        Err(_) => warn!(
            timeout = %humantime::format_duration(shutdown_timeout),
            "connections still open at the shutdown timeout; leaving them"
        ),
    }
}

fn check_static_dir(dir: &Path) {
    if !dir.join("index.html").is_file() {
        warn!(
            static_dir = %dir.display(),
            "no index.html in the static folder: the app will not load \
             (build it with `cargo xtask run`, or pass --static-dir)"
        );
    }
}
