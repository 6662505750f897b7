//! Chat's relay: one process that serves the browser app, the HTTP API and
//! the WebSocket on one port.
//!
//! Layout, one file per concept:
//! - [`config`]: every flag (`relay --help`), each also read from `CHAT_*`.
//! - [`server`]: [`server::run`] binds the routes to a listener and drives
//!   graceful shutdown; the thin binary in `main.rs` only parses flags,
//!   binds and calls it.
//! - [`filters`]: the warp routes, one function per route.
//! - [`connection`]: one WebSocket client process: a reader that answers
//!   frames and a writer that drains a bounded outbound queue.
//! - [`shutdown`]: the signal every connection listens to, and the drain
//!   guard `run` waits on before it returns.

pub mod config;
pub mod connection;
pub mod filters;
pub mod server;
pub mod shutdown;

pub use config::Config;
pub use server::run;
