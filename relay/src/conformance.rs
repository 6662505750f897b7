//! The relay's WebSocket transport in echo mode, for the Autobahn protocol
//! conformance cases (SPEC L7; `relay/tests/relay/conformance.rs`).
//!
//! The Autobahn suite drives an echo server at `/` without cookies, so it
//! cannot speak to `/ws` itself. This serves the same transport the chat
//! uses — the relay's own upgrade, socket buffers and data-frame writes
//! ([`crate::ws`]), the reader that keeps reading after a Close so the
//! close handshake completes, and the connection's coalescing writes from
//! a bounded queue ([`Link`], reading and writing in one task) — with an
//! echo in place of the hub. It is never mounted by the relay binary; only
//! tests start it.

use std::future::poll_fn;
use std::pin::pin;

use warp::{Filter, Rejection, Reply};

use crate::connection::{Io, Link};
use crate::queue;
use crate::ws::{self, WebSocket};

/// The Autobahn cases send messages up to 16 MiB.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Frames queued to be written.
const QUEUE: usize = 64;

/// `GET /`: upgrade and echo every data message.
pub fn echo() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path::end()
        .and(ws::upgrade())
        .map(|upgrade: ws::Upgrade| upgrade.accept(ws::config(MAX_MESSAGE), serve))
}

async fn serve(socket: WebSocket) {
    let (out, queue) = queue::bounded(QUEUE);
    let mut link = Link::new(socket, queue);
    // Read to the end: after a Close, tungstenite queues the reply and
    // completes the handshake while the stream is still being read.
    while let Io::Frame(Some(Ok(msg))) = poll_fn(|cx| link.poll(cx)).await {
        // A full queue holds the echo back (and reading with it) until
        // the socket has taken some of it.
        if (msg.is_text() || msg.is_binary())
            && link.writing_while(pin!(out.send(msg))).await.is_err()
        {
            break;
        }
    }
    drop(out);
    let _ = link.written().await;
}
