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
//!
//! The app allocates with Talc rather than the standard library's
//! dlmalloc: about 7 KiB less code (2.7 KiB gzipped), and Talc is the
//! faster of the two on WebAssembly. It is set here, in the library, so
//! that the component tests run on it too.

pub mod api;
pub mod app;
pub mod browser;
pub mod components;
pub mod connection;

#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
