//! The floor server (see `bench::floor`): `floor [--listen ADDR]
//! [--confirm]` prints `listening on ADDR` once it accepts connections.

use anyhow::{Context, Result};
use tokio::net::TcpListener;

/// The same allocator as the relay, so memory per connection compares.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut confirm = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--listen" => listen = args.next().context("--listen needs an address")?,
            "--confirm" => confirm = true,
            other => anyhow::bail!("unknown flag {other} (--listen ADDR, --confirm)"),
        }
    }
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    bench::floor::run(listener, confirm).await;
    Ok(())
}
