//! Chat's shared crate: the one home of the wire protocol, used by the relay
//! (`relay/`) and the browser app (`frontend/`).
//!
//! - [`api`]: the bodies of the HTTP API (`/api/login` and its errors).
//! - [`model`]: the client-side conversation model the app renders: pure
//!   state driven by the relay's frames, tested natively.
//! - [`protocol`]: every frame that crosses the WebSocket, as tagged serde
//!   enums, with the protocol version both sides check at `hello`.
//! - [`wire`]: the page's hand-written JSON codec for those frames: the same
//!   bytes as serde, in a fraction of the browser app's code size.
//!
//! This crate builds for `wasm32-unknown-unknown` and native alike and depends
//! on serde only: no tokio, warp, yew or web-sys.

pub mod api;
pub mod model;
pub mod protocol;
pub mod wire;
