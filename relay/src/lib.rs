//! Chat's relay: one process that serves the browser app, the HTTP API and
//! the WebSocket on one port.
//!
//! Layout, one file per concept:
//! - [`config`]: every flag (`relay --help`), each also read from `CHAT_*`.
//! - [`server`]: [`server::run`] binds the routes to a listener and drives
//!   graceful shutdown; the thin binary in `main.rs` only parses flags,
//!   binds and calls it.
//! - [`filters`]: the warp routes, one function per route; [`api`]: the
//!   handlers behind `/api/*` and the checks before the WebSocket upgrade.
//! - [`core`]: the chat domain (presence, conversations, the bus, limits)
//!   as a deterministic state machine: no I/O, no clock.
//! - [`hub`]: the task that owns the core, feeds it commands and ticks, and
//!   writes its output into each connection's bounded queue.
//! - [`connection`]: one WebSocket client process: one task reads and
//!   decodes frames for the hub and writes the outbound queue;
//!   [`ws`]: the upgrade and each socket's small, bounded buffers.
//! - [`auth`]: name and password rules, argon2id, tokens, the sign-in
//!   throttle; [`store`]: accounts and sessions (SQLite);
//!   [`sessions`]: live sessions and the weak user registry.
//! - [`cluster`]: cluster mode (`--redis`): the shared event log that every
//!   relay's hub applies, relay membership, and the Redis store.
//! - [`metrics`]: counters for `/metrics`; [`queue`]: the bounded queue
//!   (an atomic count over an unbounded channel) between connections and
//!   the hub.
//! - [`fuzzing`]: the fuzz harness: a core behind a stand-in transport,
//!   fed client frames cut from arbitrary bytes (SPEC L7).
//! - [`shutdown`]: the signal every connection listens to, and the drain
//!   guard `run` waits on before it returns.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod connection;
pub mod core;
pub mod filters;
pub mod fuzzing;
pub mod hub;
pub mod metrics;
pub mod queue;
pub mod server;
pub mod sessions;
pub mod shutdown;
pub mod store;
pub mod ws;

pub use config::Config;
pub use server::run;
