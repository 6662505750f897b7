//! The relay's entry point: [`run`] serves every route on a listener until
//! the shutdown future resolves, then closes every connection cleanly.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::auth::Throttle;
use crate::cluster::throttle::SharedThrottle;
use crate::cluster::{self, store::RedisStore, Cluster};
use crate::config::Config;
use crate::hub::{now_millis, Hub};
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::shutdown::{DrainGuard, Shutdown, Trigger};
use crate::store::{SqliteStore, Store};

/// How often expired sessions are purged from the store and from memory.
const SESSION_SWEEP: Duration = Duration::from_secs(3600);

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
    store: Arc<dyn Store>,
    sessions: Sessions,
    throttle: Logins,
    hub: Hub,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    next_connection: AtomicU64,
    cluster: Option<Cluster>,
    _drain: DrainGuard,
}

impl Relay {
    fn new(
        config: Config,
        store: Arc<dyn Store>,
        cluster: Option<Cluster>,
        trigger: &Trigger,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let link = cluster.as_ref().map(|cluster| {
            let settings = cluster::Settings {
                relay_ttl: config.relay_ttl,
                tick: config.presence_batch,
                snapshot_interval: config.snapshot_interval,
                log_retention: config.log_retention,
            };
            cluster.start(settings, metrics.clone(), trigger.subscribe())
        });
        // In cluster mode connection ids carry the relay's number, so they
        // are unique across relays.
        let first_connection = cluster
            .as_ref()
            .map_or(0, |c| c.relay() << cluster::CONN_BITS)
            + 1;
        let throttle = match &cluster {
            Some(cluster) => Logins::Shared(SharedThrottle::new(
                cluster.connection(),
                config.login_failures_per_name,
                config.login_failures_per_address,
                config.login_window,
            )),
            None => Logins::Local(Mutex::new(Throttle::new(
                config.login_failures_per_name,
                config.login_failures_per_address,
                config.login_window,
            ))),
        };
        Relay {
            inner: Arc::new(Inner {
                hub: Hub::spawn(config.limits(), metrics.clone(), trigger.subscribe(), link),
                config,
                store,
                sessions: Sessions::default(),
                throttle,
                metrics,
                shutdown: trigger.subscribe(),
                next_connection: AtomicU64::new(first_connection),
                cluster,
                _drain: trigger.guard(),
            }),
        }
    }

    /// Accounts and sessions.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Live sessions and the user registry.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Ok, or how long sign-ins for this name or from this address must
    /// wait (SPEC S3).
    pub async fn login_wait(&self, name_key: &str, addr: IpAddr) -> Result<(), Duration> {
        match &self.inner.throttle {
            Logins::Local(throttle) => lock(throttle).check(name_key, addr, Instant::now()),
            // Redis away: the store is too, and the sign-in fails there.
            Logins::Shared(throttle) => throttle.check(name_key, addr).await.unwrap_or(Ok(())),
        }
    }

    /// Counts a failed sign-in.
    pub async fn login_failed(&self, name_key: &str, addr: IpAddr) {
        match &self.inner.throttle {
            Logins::Local(throttle) => {
                lock(throttle).record_failure(name_key, addr, Instant::now());
            }
            Logins::Shared(throttle) => {
                if let Err(e) = throttle.record_failure(name_key, addr).await {
                    warn!(error = %e, "a failed sign-in could not be counted in Redis");
                }
            }
        }
    }

    /// A successful sign-in: the name's failures are forgotten.
    pub async fn login_succeeded(&self, name_key: &str, addr: IpAddr) {
        match &self.inner.throttle {
            Logins::Local(throttle) => lock(throttle).record_success(name_key, addr),
            Logins::Shared(throttle) => {
                if let Err(e) = throttle.record_success(name_key, addr).await {
                    warn!(error = %e, "a sign-in could not reset its failures in Redis");
                }
            }
        }
    }

    /// The hub that owns the live chat state.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The flags this relay runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A listener for the shutdown signal.
    pub fn shutdown(&self) -> Shutdown {
        self.inner.shutdown.clone()
    }

    /// Cluster mode: false while Redis does not answer.
    pub fn healthy(&self) -> bool {
        self.inner.cluster.is_none() || self.inner.metrics.redis_up.load(Ordering::Relaxed) == 1
    }

    /// A fresh id for a new connection, used in log spans.
    pub fn next_connection_id(&self) -> u64 {
        self.inner.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// Where failed sign-ins are counted: here, or in Redis for the cluster.
#[derive(Debug)]
enum Logins {
    // A std Mutex: never held across an `.await`.
    Local(Mutex<Throttle>),
    Shared(SharedThrottle),
}

fn lock(throttle: &Mutex<Throttle>) -> MutexGuard<'_, Throttle> {
    throttle.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens the store named by `--db`, or joins the cluster at `--redis` and
/// keeps accounts and sessions there.
pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, Option<Cluster>), String> {
    if let Some(url) = &config.redis {
        let cluster = Cluster::join(url).await?;
        let store = RedisStore::new(cluster.connection(), config.session_idle);
        return Ok((Arc::new(store), Some(cluster)));
    }
    open_sqlite(config).map(|store| (store, None))
}

fn open_sqlite(config: &Config) -> Result<Arc<dyn Store>, String> {
    let store = if config.db.as_os_str() == ":memory:" {
        SqliteStore::in_memory()
    } else {
        SqliteStore::open(&config.db)
    };
    store
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| format!("cannot open the store {}: {e}", config.db.display()))
}

/// Serves the app, the API and the WebSocket on `listener` until `shutdown`
/// resolves; then stops accepting, tells every WebSocket client that the
/// relay is restarting (close code 1012) and returns once they are closed,
/// or after `--shutdown-timeout`. Fails only if the store cannot be opened
/// (or, with `--redis`, Redis cannot be reached at start).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (store, cluster) = open_store(&config).await?;
    check_static_dir(&config.static_dir);
    // Chat frames are small and latency matters: no Nagle delay. Accepted
    // sockets inherit the option from the listener on Linux.
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY");
    }
    let shutdown_timeout = config.shutdown_timeout;
    let trigger = Trigger::new();
    let relay = Relay::new(config, store, cluster.clone(), &trigger);
    tokio::spawn(sweep_sessions(relay.clone()));
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
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    Ok(())
}

/// Purges expired sessions now and then, until shutdown.
async fn sweep_sessions(relay: Relay) {
    let mut shutdown = relay.shutdown();
    let mut every = tokio::time::interval(SESSION_SWEEP);
    let idle = relay.config().session_idle;
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.recv() => return,
        }
        let now = now_millis();
        match relay.store().purge_expired_sessions(now, idle_ms).await {
            Ok(n) if n > 0 => info!(sessions = n, "expired sessions purged"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "purging expired sessions failed"),
        }
        relay.sessions().forget_idle(now.saturating_sub(idle_ms));
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
