//! Chat's browser app: a Yew single-page app compiled to WebAssembly.
//!
//! - [`app`]: the root component: sign-in page or chat.
//! - [`api`]: the relay's HTTP API (sign-in, sign-out, who am I).
//! - [`browser`]: page visibility and focus, the title, notifications, downloads.
//! - [`connection`]: the one WebSocket to the relay: handshake, heartbeats,
//!   reconnects with jittered backoff (SPEC R1).
//! - [`components`]: small view components, each testable on its own in a
//!   browser (`frontend/tests/`).
//!
//! The binary (`main.rs`) only mounts [`app::App`].

pub mod api;
pub mod app;
pub mod browser;
pub mod components;
pub mod connection;
