//! The `relay` binary: parses flags, binds, and runs until SIGINT or SIGTERM.

use std::cell::Cell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use relay::Config;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Connections come and go with buffers of very different sizes; mimalloc
/// hands freed memory back instead of letting the heap fragment and grow
/// (see the soak figures in docs/RELIABILITY.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's settings for the relay, each kept if the environment already
/// sets it. `purge_delay` 0: memory freed by departed connections goes back
/// to the system at once. By default mimalloc waits a second and then
/// purges only when the thread that freed the memory allocates again, so
/// a relay that has gone quiet keeps what its last connections used.
/// `allow_thp` 0: no transparent huge pages, which back 2 MiB of memory
/// for every touched page of it; the relay holds many small objects, and
/// with them it needed twice the memory before its first connection (16
/// against 8.7 MiB) and held 50 against 39 MiB once 2,000 had left.
const ALLOCATOR_OPTIONS: [(&str, &str); 2] =
    [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ALLOW_THP", "0")];

fn main() -> ExitCode {
    apply_allocator_options();
    serve()
}

/// mimalloc reads its options from the environment once, as the process
/// loads, and setting them from code takes an unsafe call the workspace
/// forbids. So the relay puts them in its environment and starts its own
/// executable again in its place (exec: same process id, same arguments
/// and files), before anything else has run. When that fails the relay
/// runs on with mimalloc's defaults.
fn apply_allocator_options() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;

        let missing: Vec<_> = ALLOCATOR_OPTIONS
            .iter()
            .filter(|(name, _)| std::env::var_os(name).is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        command.args(args);
        for (name, value) in missing {
            command.env(name, value);
        }
        let error = command.exec(); // returns only if it failed
        eprintln!("relay: running with the allocator's default settings: {error}");
    }
}

/// While no connection is open, every thread that allocates hands the
/// allocator's free memory back to the system: at most once a second, and
/// at most [`IDLE_COLLECTS`] times after everyone has left, which covers
/// the offline grace and the clean-up after it. mimalloc keeps the blocks
/// other threads freed into a thread's pages until that thread collects
/// them, and an idle thread never does: after 2,000 connections had left,
/// RSS stayed at two to three times what it was before the first (see the
/// soak in docs/RELIABILITY.md). The store's thread collects from its idle
/// tick ([`relay::metrics::ON_THREAD_IDLE`]); the runtime's workers are
/// asleep by then, so a thread of the relay's own wakes them to collect
/// ([`start_collecting`]).
fn serve() -> ExitCode {
    let _ = relay::metrics::ON_THREAD_IDLE.set(collect_when_idle);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => {
            start_collecting(runtime.handle().clone());
            runtime.block_on(relay_main())
        }
        Err(e) => {
            eprintln!("relay: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Collections per thread after everyone has left.
const IDLE_COLLECTS: u32 = 30;
/// The least time between two collections on one thread.
const COLLECT_EVERY: Duration = Duration::from_secs(1);
/// How long a worker's collecting task waits for the others to start.
const WORKERS_WAIT: Duration = Duration::from_millis(50);

thread_local! {
    /// This thread's collections: for which time everyone left, how many,
    /// and when the last was.
    static COLLECTED: Cell<(u64, u32, Option<Instant>)> = const { Cell::new((0, 0, None)) };
}

/// The idle hook of the store's thread ([`relay::metrics::ON_THREAD_IDLE`]):
/// see [`serve`].
fn collect_when_idle() {
    let _ = collect_if_due();
}

/// Collects this thread's free memory if no connection is open and this
/// thread's collection is due (see [`serve`]); says whether it did.
fn collect_if_due() -> bool {
    let Some(emptied) = relay::metrics::PROCESS_CONNECTIONS.idle() else {
        return false;
    };
    COLLECTED.with(|collected| {
        let (seen, mut count, last) = collected.get();
        if seen != emptied {
            count = 0;
        }
        let now = Instant::now();
        if count >= IDLE_COLLECTS || last.is_some_and(|t| now.duration_since(t) < COLLECT_EVERY) {
            collected.set((emptied, count, last));
            return false;
        }
        collect_free_memory();
        collected.set((emptied, count + 1, Some(now)));
        true
    })
}

/// A worker goes to sleep when the relay goes quiet, before the hub has
/// freed what the last connections left (the history, at the end of the
/// offline grace), and sleeps until work comes: memory other threads freed
/// into its pages would stay with it (7.4 MiB counted in use on 237 pages
/// holding 164 KiB of live blocks, after a 10-minute soak;
/// docs/RELIABILITY.md). So the `collect` thread, each time its own
/// collection is due, gives every worker a task that collects there. Each
/// task holds its worker until all have started, or for [`WORKERS_WAIT`],
/// so that the tasks land on different workers.
fn start_collecting(runtime: tokio::runtime::Handle) {
    let workers = runtime.metrics().num_workers();
    let collector = std::thread::Builder::new()
        .name("collect".into())
        .spawn(move || loop {
            std::thread::sleep(COLLECT_EVERY);
            if collect_if_due() {
                collect_on_every_worker(&runtime, workers);
            }
        });
    if let Err(e) = collector {
        eprintln!("relay: idle workers will keep some freed memory: {e}");
    }
}

/// One task per worker, each waiting (blocking its worker, briefly, while
/// no connection is open) until all have started, then collecting: see
/// [`start_collecting`].
fn collect_on_every_worker(runtime: &tokio::runtime::Handle, workers: usize) {
    let started = std::sync::Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
    for _ in 0..workers {
        let started = started.clone();
        drop(runtime.spawn(async move {
            let (count, all) = &*started;
            let mut count = count.lock().unwrap_or_else(|e| e.into_inner());
            *count += 1;
            all.notify_all();
            let deadline = Instant::now() + WORKERS_WAIT;
            while *count < workers {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                count = all
                    .wait_timeout(count, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            drop(count);
            collect_free_memory();
        }));
    }
}

/// Gives this thread's free allocator memory back to the system: frees
/// what other threads freed into its pages, and returns empty pages.
///
/// The relay's one unsafe call (the workspace denies unsafe code, the
/// library forbids it; relay/Cargo.toml).
#[allow(unsafe_code)]
fn collect_free_memory() {
    // SAFETY: `mi_collect` takes a plain bool, reads and writes only
    // mimalloc's own state for the calling thread, and is safe to call at
    // any time from any thread that may allocate (mimalloc's API,
    // "mi_collect: eagerly free memory"). It frees no block the program
    // still holds.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

async fn relay_main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config = Config::parse();
    if let Err(problem) = config.validate() {
        eprintln!("relay: {problem}");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("relay: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!("Chat is up at http://{addr}/"),
        Err(e) => tracing::warn!(error = %e, "listening, address unknown"),
    }
    match relay::run(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("relay: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
