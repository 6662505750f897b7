//! The `relay` binary: parses flags, binds, and runs until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use relay::Config;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Connections come and go with buffers of very different sizes; mimalloc
/// hands freed memory back instead of letting the heap fragment and grow
/// (see the soak figures in docs/RELIABILITY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's settings for the relay, each kept if the environment already
/// sets it. `purge_delay` 0: memory freed by departed connections goes back
/// to the system at once. By default mimalloc waits a second and then
/// purges only when the thread that freed the memory allocates again, so
/// a relay that has gone quiet keeps what its last connections used.
const ALLOCATOR_OPTIONS: [(&str, &str); 1] = [("MIMALLOC_PURGE_DELAY", "0")];

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

#[tokio::main]
async fn serve() -> ExitCode {
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
