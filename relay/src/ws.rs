//! The WebSocket upgrade and the socket's buffers, owned here rather than
//! by warp's `ws()` so that every connection's memory is small and bounded
//! (issue 7: ≤ 12 KiB per idle signed-in connection).
//!
//! tungstenite's defaults suit a few busy sockets, not thousands of idle
//! ones: a 128 KiB read buffer allocated with every socket, and a write
//! buffer that keeps the capacity of the largest batch it ever sent. warp
//! 0.4 cannot size either. Here the read buffer is [`READ_BUFFER`];
//! tungstenite hands every frame straight on to [`Coalesce`], which gathers
//! the frames of one batch and writes them with one call at the flush, then
//! gives its buffer back; and [`fragments`] cuts every message longer than
//! [`FRAGMENT`] into continuation frames, so tungstenite's own write buffer
//! never holds more than [`MAX_WRITE_BUFFER`]: a large `welcome` passes
//! through without pinning its size for the rest of the connection.
//! Browsers and every client library reassemble fragments (RFC 6455 §5.4).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// An upgraded WebSocket.
pub type WebSocket = WebSocketStream<Coalesce<TokioIo<hyper::upgrade::Upgraded>>>;

/// Bytes read from the socket at a time, allocated with every connection.
/// Client frames are small (a hello, a message, a typing signal); a larger
/// one grows the buffer to its size.
pub const READ_BUFFER: usize = 1024;
/// Frames are written to the socket once this many bytes wait (and at
/// every flush): a burst of small frames still costs one write per KiB.
/// tungstenite passes every frame on at once ([`Coalesce`] gathers them).
pub const WRITE_BUFFER: usize = 0;
/// [`Coalesce`] writes what it gathered once this many bytes wait, without
/// waiting for the flush: the most a batch holds.
pub const GATHER: usize = 16 * 1024;
/// [`Coalesce`] keeps a buffer of at most this capacity between batches;
/// a larger one is given back.
pub const KEEP: usize = 1024;
/// The largest frame payload the relay sends; longer messages go out as
/// a first frame and continuation frames of at most this size.
pub const FRAGMENT: usize = 1024;
/// The most a connection's write buffer may hold.
pub const MAX_WRITE_BUFFER: usize = max_write_buffer(FRAGMENT);

/// The most a write buffer may hold when messages are cut into frames of
/// `fragment` bytes: what waits to be written, one frame, and room for
/// the control frames (pong, close, each at most 127 bytes) tungstenite
/// adds of its own accord.
pub const fn max_write_buffer(fragment: usize) -> usize {
    WRITE_BUFFER + fragment + 1024
}

/// The buffers of a connection, and the largest frame and message it may
/// receive.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// A valid upgrade request, to be answered with [`Upgrade::accept`].
#[derive(Debug)]
pub struct Upgrade {
    accept: String,
    on_upgrade: Option<OnUpgrade>,
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug)]
struct NotAnUpgrade;

impl warp::reject::Reject for NotAnUpgrade {}

/// A `GET` asking for a WebSocket (RFC 6455 §4.2.1): `Connection` lists
/// `upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a
/// `Sec-WebSocket-Key` of 16 bytes in base64. Anything else is rejected.
pub fn upgrade() -> impl Filter<Extract = (Upgrade,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            |headers: HeaderMap, on_upgrade: Option<OnUpgrade>| async move {
                match upgrade_key(&headers) {
                    Some(key) => Ok(Upgrade {
                        accept: derive_accept_key(key.as_bytes()),
                        on_upgrade,
                    }),
                    None => Err(warp::reject::custom(NotAnUpgrade)),
                }
            },
        )
}

/// The request's `Sec-WebSocket-Key` if it asks for a WebSocket upgrade.
fn upgrade_key(headers: &HeaderMap) -> Option<&str> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)?.as_bytes() != b"13" {
        return None;
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)?
        .to_str()
        .ok()?
        .trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    (decoded.len() == 16).then_some(key)
}

impl Upgrade {
    /// Answers 101 Switching Protocols; once hyper hands over the
    /// connection, runs `serve` on the WebSocket (in its own task).
    pub fn accept<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Upgrade { accept, on_upgrade } = self;
        let Some(on_upgrade) = on_upgrade else {
            // Only a request that did not come over a real connection (an
            // in-process test of the routes) has nothing to upgrade.
            debug!("nothing to upgrade");
            let mut response = Response::default();
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        };
        tokio::spawn(
            async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let io = Coalesce::new(TokioIo::new(upgraded));
                        let socket =
                            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                        serve(socket).await;
                    }
                    Err(e) => debug!(error = %e, "upgrade failed"),
                }
            }
            .in_current_span(),
        );
        let mut response = Response::default();
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(value) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
        }
        response
    }
}

/// A message as the frames the relay writes: itself when it fits in one
/// frame of `size` bytes ([`FRAGMENT`] for the chat), otherwise a first
/// frame and continuation frames, each at most `size` long (text is cut
/// between characters, so every frame holds whole UTF-8; `size` is at
/// least 4). The frames share the message's bytes.
pub fn fragments(msg: Message, size: usize) -> Fragments {
    let size = size.max(4);
    let (opcode, bytes) = match msg {
        Message::Text(text) if text.len() > size => (Data::Text, Bytes::from(text)),
        Message::Binary(bytes) if bytes.len() > size => (Data::Binary, bytes),
        other => return Fragments::One(Some(other)),
    };
    Fragments::Many {
        opcode,
        bytes,
        size,
        sent: 0,
    }
}

/// The frames of one message; see [`fragments`].
#[derive(Debug)]
pub enum Fragments {
    /// The message fits in one frame.
    One(Option<Message>),
    /// The message's bytes, and how many of them have been cut off.
    Many {
        /// Text or binary.
        opcode: Data,
        /// The whole message.
        bytes: Bytes,
        /// The longest frame.
        size: usize,
        /// Bytes already in earlier frames.
        sent: usize,
    },
}

impl Iterator for Fragments {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        match self {
            Fragments::One(msg) => msg.take(),
            Fragments::Many {
                opcode,
                bytes,
                size,
                sent,
            } => {
                let start = *sent;
                if start >= bytes.len() {
                    return None;
                }
                let mut end = (start + *size).min(bytes.len());
                if *opcode == Data::Text {
                    // Back up to a character boundary: a UTF-8 character
                    // starts with anything but 0b10xx_xxxx.
                    while end < bytes.len() && end > start && bytes[end] & 0xC0 == 0x80 {
                        end -= 1;
                    }
                }
                *sent = end;
                let code = if start == 0 { *opcode } else { Data::Continue };
                let last = end == bytes.len();
                Some(Message::Frame(Frame::message(
                    bytes.slice(start..end),
                    OpCode::Data(code),
                    last,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;

    fn frames(msg: Message) -> Vec<(OpCode, bool, Vec<u8>)> {
        fragments(msg, FRAGMENT)
            .map(|m| match m {
                Message::Frame(f) => (f.header().opcode, f.header().is_final, f.payload().to_vec()),
                other => (
                    OpCode::Data(Data::Reserved(0)),
                    true,
                    other.into_data().to_vec(),
                ),
            })
            .collect()
    }

    #[test]
    fn short_messages_go_out_whole() {
        let text = "x".repeat(FRAGMENT);
        let out: Vec<Message> = fragments(Message::text(text.clone()), FRAGMENT).collect();
        assert_eq!(out, vec![Message::text(text)]);
        let ping: Vec<Message> = fragments(Message::Ping(Bytes::new()), FRAGMENT).collect();
        assert_eq!(ping, vec![Message::Ping(Bytes::new())]);
    }

    #[test]
    fn long_text_is_cut_into_continuations_between_characters() {
        // "é" is two bytes: an odd offset falls inside a character.
        let text = format!("a{}", "é".repeat(3 * FRAGMENT));
        let out = frames(Message::text(text.clone()));
        assert!(out.len() >= 6, "{} frames", out.len());
        assert_eq!(out[0].0, OpCode::Data(Data::Text));
        for (opcode, _, _) in &out[1..] {
            assert_eq!(*opcode, OpCode::Data(Data::Continue));
        }
        let finals: Vec<bool> = out.iter().map(|(_, last, _)| *last).collect();
        assert_eq!(finals.iter().filter(|f| **f).count(), 1);
        assert_eq!(finals.last(), Some(&true));
        let mut whole = Vec::new();
        for (_, _, payload) in &out {
            assert!(payload.len() <= FRAGMENT);
            assert!(
                std::str::from_utf8(payload).is_ok(),
                "a frame splits a character"
            );
            whole.extend_from_slice(payload);
        }
        assert_eq!(whole, text.as_bytes());
    }

    #[test]
    fn long_binary_is_cut_at_the_fragment_size() {
        let data = vec![0xAB_u8; 2 * FRAGMENT + 1];
        let out = frames(Message::binary(data.clone()));
        let sizes: Vec<usize> = out.iter().map(|(_, _, p)| p.len()).collect();
        assert_eq!(sizes, vec![FRAGMENT, FRAGMENT, 1]);
        assert_eq!(out[0].0, OpCode::Data(Data::Binary));
        let whole: Vec<u8> = out.into_iter().flat_map(|(_, _, p)| p).collect();
        assert_eq!(whole, data);
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(upgrade_key(&headers), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        // RFC 6455's example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );

        let mut wrong_version = headers.clone();
        wrong_version.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(upgrade_key(&wrong_version), None);
        let mut short_key = headers.clone();
        short_key.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("c2hvcnQ="),
        );
        assert_eq!(upgrade_key(&short_key), None);
        let mut no_upgrade = headers.clone();
        no_upgrade.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(upgrade_key(&no_upgrade), None);
        let mut not_websocket = headers;
        not_websocket.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(upgrade_key(&not_websocket), None);
    }

    /// Records each write the socket is asked for.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push(data.len());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Issue 7: a burst of frames is one write at the flush; a batch over
    /// GATHER is written as it grows; a control frame goes out at once; the
    /// buffer is given back after a large batch, so an idle connection
    /// holds none.
    #[tokio::test]
    async fn a_batch_is_one_write_and_the_buffer_is_given_back() {
        use tokio::io::AsyncWriteExt;
        let mut socket = Coalesce::new(Recorder::default());
        // tungstenite writes each frame, header and payload, in one call.
        let mut text_frame = vec![0x81, 0x7e, 0x00, 0xc4];
        text_frame.extend([b'x'; 196]);
        for _ in 0..16 {
            socket.write_all(&text_frame).await.unwrap();
        }
        assert!(socket.inner.writes.is_empty(), "nothing before the flush");
        socket.flush().await.unwrap();
        assert_eq!(
            socket.inner.writes,
            [16 * 200],
            "one write for sixteen frames"
        );
        assert_eq!(socket.buf.capacity(), 0, "a 3 KiB batch is not kept");

        socket.inner.writes.clear();
        for _ in 0..100 {
            socket.write_all(&[0x81; 1024]).await.unwrap();
        }
        socket.flush().await.unwrap();
        let total: usize = socket.inner.writes.iter().sum();
        assert_eq!(total, 100 * 1024);
        assert!(
            socket.inner.writes.len() <= 100 * 1024 / GATHER + 1,
            "{:?}",
            socket.inner.writes
        );
        assert_eq!(socket.buf.capacity(), 0);

        socket.inner.writes.clear();
        socket.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
        assert_eq!(socket.inner.writes, [4], "a close goes out without a flush");
    }
}

/// The socket under a connection's WebSocket: gathers the frames written
/// between two flushes and writes them with one call at the flush (at most
/// [`GATHER`] bytes wait), so a burst costs one write syscall, not one per
/// frame; control frames go out at once; and after a batch larger than
/// [`KEEP`] the buffer is given back, so an idle connection holds none.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    buf: Vec<u8>,
    written: usize,
}

impl<S> Coalesce<S> {
    /// Wraps a socket.
    pub fn new(inner: S) -> Self {
        Coalesce {
            inner,
            buf: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > KEEP {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What tungstenite wrote while reading goes out before the next read.
        if this.written < this.buf.len() {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= GATHER {
            ready!(this.poll_drain(cx))?;
        }
        this.buf.extend_from_slice(data);
        // tungstenite hands over each frame in its own write. A control
        // frame (close, ping, pong: opcode bit 3) goes out at once: it is
        // urgent, and tungstenite may not flush after it (a close reply
        // ends the connection on the spot).
        if data.first().is_some_and(|b| b & 0x08 != 0) {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
