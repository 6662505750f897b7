//! The WebSocket upgrade and the socket's buffers, owned here rather than
//! by warp's `ws()` so that every connection's memory is small and bounded
//! (issue 7: ≤ 12 KiB per idle signed-in connection), and the write path,
//! so that a message serialized once is written to every recipient from
//! the same bytes.
//!
//! tungstenite's defaults suit a few busy sockets, not thousands of idle
//! ones: a 128 KiB read buffer allocated with every socket, and a write
//! buffer that keeps the capacity of the largest batch it ever sent. warp
//! 0.4 cannot size either. Here the read buffer is [`READ_BUFFER`], and
//! tungstenite writes only control frames: data frames go straight to
//! [`Coalesce`], which gathers the frames of one batch, keeps long
//! payloads as the message's shared bytes rather than copying them, writes
//! the batch with one call at the flush (vectored when it holds shared
//! payloads), then gives its buffers back.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine as _;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::upgrade;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn, Instrument};
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// An upgraded WebSocket.
pub type WebSocket = WebSocketStream<Coalesce<Transport>>;

/// Bytes read from the socket at a time, allocated with every connection.
/// Client frames are small (a hello, a message, a typing signal); a larger
/// one grows the buffer to its size.
pub const READ_BUFFER: usize = 1024;
/// tungstenite's own write buffer: none, it passes every control frame
/// on at once.
pub const WRITE_BUFFER: usize = 0;
/// The most tungstenite's write buffer may hold: a control frame (a pong
/// or a close, at most 131 bytes) and room to spare.
pub const MAX_WRITE_BUFFER: usize = 4 * 1024;
/// [`Coalesce`] writes what it gathered once this many bytes wait, without
/// waiting for the flush: the most a batch holds, but for the one message
/// that crosses it.
pub const GATHER: usize = 16 * 1024;
/// [`Coalesce`] keeps a buffer of at most this capacity between batches;
/// a larger one is given back.
pub const KEEP: usize = 1024;
/// Payloads longer than this are written from the message's own bytes;
/// shorter ones are copied next to their header (one slice, not two).
pub const SHARE: usize = 512;
/// The most slices one vectored write is given.
const MAX_SLICES: usize = 64;
/// Copied bytes (pongs) [`Coalesce`] holds for tungstenite before it takes
/// the client for one that reads nothing.
const MAX_CONTROL_BACKLOG: usize = 64 * 1024;

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
                match on_upgrade.await.map(Transport::new) {
                    Ok(Some(transport)) => {
                        let io = Coalesce::new(transport);
                        let socket =
                            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                        serve(socket).await;
                    }
                    Ok(None) => warn!("an upgraded connection that is not a TCP stream"),
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

/// A data frame was offered after a close frame had gone in (RFC 6455
/// §5.5.1: nothing follows a close).
#[derive(Debug)]
pub struct AfterClose;

/// The socket under a connection's WebSocket. It gathers what is written
/// between two flushes and writes it with one call at the flush, or once
/// [`GATHER`] bytes wait (vectored when it holds shared payloads), so a
/// burst costs one write syscall, not one per frame.
///
/// Data frames do not go through tungstenite: [`Coalesce::push_data`]
/// adds a header, and a payload longer than [`SHARE`] is kept as the
/// message's own bytes, shared with every other recipient of it, and
/// written from there: a presence diff to 5,000 sockets or a 160 KiB
/// welcome is never copied in user space and never cut into fragments.
/// tungstenite writes only control frames (pings, pongs, close), which
/// go out at once; after a close frame, data is refused ([`AfterClose`]).
/// After a batch larger than [`KEEP`] the buffers are given back, so an
/// idle connection holds none.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    /// What waits, in order, before `tail`: copied bytes and shared payloads.
    chunks: VecDeque<Bytes>,
    /// Copied bytes after the last chunk.
    tail: Vec<u8>,
    /// How much of `tail` is written (only while `chunks` is empty).
    tail_written: usize,
    /// Bytes waiting in all.
    pending: usize,
    /// A close frame has gone in.
    closed: bool,
}

impl<S> Coalesce<S> {
    /// Wraps a socket.
    pub fn new(inner: S) -> Self {
        Coalesce {
            inner,
            chunks: VecDeque::new(),
            tail: Vec::new(),
            tail_written: 0,
            pending: 0,
            closed: false,
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Adds a final, unmasked data frame of `kind` (text or binary) with
    /// `payload`; it is written at the next flush, or sooner once
    /// [`GATHER`] bytes wait.
    pub fn push_data(&mut self, kind: Data, payload: Bytes) -> Result<(), AfterClose> {
        if self.closed {
            return Err(AfterClose);
        }
        let header = FrameHeader {
            opcode: OpCode::Data(kind),
            ..FrameHeader::default()
        };
        let before = self.tail.len();
        // Writing into a Vec cannot fail.
        let _ = header.format(payload.len() as u64, &mut self.tail);
        self.pending += self.tail.len() - before + payload.len();
        if payload.len() <= SHARE {
            self.tail.extend_from_slice(&payload);
        } else {
            let mut copied = Bytes::from(std::mem::take(&mut self.tail));
            drop(copied.split_to(self.tail_written));
            self.tail_written = 0;
            self.chunks.push_back(copied);
            self.chunks.push_back(payload);
        }
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything waiting.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending > 0 {
            let inner = Pin::new(&mut self.inner);
            let n = if self.chunks.is_empty() {
                // Small frames only, the common case: a plain write, which
                // costs the kernel less than a vectored one.
                ready!(inner.poll_write(cx, &self.tail[self.tail_written..]))?
            } else {
                let mut slices = [io::IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for chunk in self.chunks.iter().take(MAX_SLICES - 1) {
                    slices[count] = io::IoSlice::new(chunk);
                    count += 1;
                }
                if count == self.chunks.len() {
                    slices[count] = io::IoSlice::new(&self.tail[self.tail_written..]);
                    count += 1;
                }
                ready!(inner.poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        self.tail.clear();
        self.tail_written = 0;
        if self.tail.capacity() > KEEP {
            self.tail = Vec::new();
        }
        if self.chunks.capacity() > 8 {
            self.chunks = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Drops the first `n` bytes waiting: they are written.
    fn advance(&mut self, mut n: usize) {
        self.pending -= n;
        while n > 0 {
            let Some(chunk) = self.chunks.front_mut() else {
                self.tail_written += n;
                return;
            };
            if n < chunk.len() {
                drop(chunk.split_to(n));
                return;
            }
            n -= chunk.len();
            self.chunks.pop_front();
        }
    }
}

/// The socket under a WebSocket: the TCP stream itself, taken back from
/// hyper once it has let go of the connection, so that every read and write
/// is a direct call rather than one through hyper's boxed connection and
/// the replay buffer it keeps in front of it.
#[derive(Debug)]
pub struct Transport {
    stream: TcpStream,
    /// The bytes hyper read past the request (a client may send its first
    /// frame without waiting for the 101), read first.
    read_first: Bytes,
}

impl Transport {
    /// The TCP stream under `upgraded`; `None` if it is not one (the relay
    /// only listens on TCP).
    pub fn new(upgraded: Upgraded) -> Option<Self> {
        let parts = upgrade::downcast::<TokioIo<TcpStream>>(upgraded).ok()?;
        Some(Transport {
            stream: parts.io.into_inner(),
            // A copy: the bytes are a view into hyper's read buffer, which
            // would stay allocated, unused, as long as they do.
            read_first: Bytes::copy_from_slice(&parts.read_buf),
        })
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_first.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.read_first.len().min(buf.remaining());
        buf.put_slice(&this.read_first.split_to(n));
        if this.read_first.is_empty() {
            this.read_first = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, data)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, slices)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
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
        if this.pending > 0 {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

/// tungstenite's writes: control frames, each in one call.
impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tail.len() >= MAX_CONTROL_BACKLOG {
            // Pongs pile up unread: the client reads nothing.
            return Poll::Ready(Err(io::Error::other("the client reads nothing")));
        }
        this.tail.extend_from_slice(data);
        this.pending += data.len();
        // A close frame (opcode 8) ends the data; every control frame
        // (opcode bit 3) goes out at once: it is urgent, and tungstenite
        // may not flush after it (a close reply ends the connection on the
        // spot).
        if data.first().is_some_and(|b| b & 0x0F == 0x08) {
            this.closed = true;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Opcodes as they are on the wire.
    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;

    /// Records each write the socket is asked for, taking at most `limit`
    /// bytes a call.
    struct Recorder {
        writes: Vec<usize>,
        bytes: Vec<u8>,
        limit: usize,
    }

    impl Recorder {
        fn new(limit: usize) -> Self {
            Recorder {
                writes: Vec::new(),
                bytes: Vec::new(),
                limit,
            }
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            slices: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut taken = 0;
            for slice in slices {
                let n = slice.len().min(this.limit - taken);
                this.bytes.extend_from_slice(&slice[..n]);
                taken += n;
            }
            this.writes.push(taken);
            Poll::Ready(Ok(taken))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The frames in `bytes`, parsed as a client would: (opcode, fin, payload).
    fn parse(mut bytes: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let mut cursor = io::Cursor::new(bytes);
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            let start = cursor.position() as usize;
            assert!(header.mask.is_none(), "a server frame is not masked");
            let opcode: u8 = header.opcode.into();
            let end = start + len as usize;
            frames.push((opcode, header.is_final, bytes[start..end].to_vec()));
            bytes = &bytes[end..];
        }
        frames
    }

    async fn flush(socket: &mut Coalesce<Recorder>) {
        std::future::poll_fn(|cx| socket.poll_drain(cx))
            .await
            .unwrap();
    }

    /// Issue 7: a burst of frames is one write at the flush; the buffer is
    /// given back after a large batch, so an idle connection holds none.
    #[tokio::test]
    async fn a_batch_is_one_write_and_the_buffer_is_given_back() {
        let mut socket = Coalesce::new(Recorder::new(usize::MAX));
        for i in 0..16 {
            let text = format!("{i:>200}");
            socket.push_data(Data::Text, Bytes::from(text)).unwrap();
        }
        assert!(socket.inner.writes.is_empty(), "nothing before the flush");
        flush(&mut socket).await;
        assert_eq!(
            socket.inner.writes,
            [16 * 204],
            "one write for sixteen frames"
        );
        let frames = parse(&socket.inner.bytes);
        assert_eq!(frames.len(), 16);
        for (i, (opcode, fin, payload)) in frames.iter().enumerate() {
            assert_eq!((*opcode, *fin), (TEXT, true));
            assert_eq!(payload, format!("{i:>200}").as_bytes());
        }
        assert_eq!(socket.tail.capacity(), 0, "a 3 KiB batch is not kept");
        assert_eq!(socket.pending(), 0);
    }

    /// A long payload is written from the message's own bytes, whole, in
    /// one frame, between the frames before and after it.
    #[tokio::test]
    async fn a_long_payload_is_shared_not_copied_and_not_cut() {
        let mut socket = Coalesce::new(Recorder::new(usize::MAX));
        let long = Bytes::from(vec![b'w'; 160 * 1024]);
        socket
            .push_data(Data::Text, Bytes::from_static(b"before"))
            .unwrap();
        socket.push_data(Data::Text, long.clone()).unwrap();
        socket
            .push_data(Data::Binary, Bytes::from_static(b"after"))
            .unwrap();
        let shared = socket.chunks.iter().any(|c| c.as_ptr() == long.as_ptr());
        assert!(shared, "the payload is the message's own bytes");
        assert!(socket.tail.capacity() < 1024, "the payload was copied");
        flush(&mut socket).await;
        let frames = parse(&socket.inner.bytes);
        assert_eq!(
            frames,
            vec![
                (TEXT, true, b"before".to_vec()),
                (TEXT, true, long.to_vec()),
                (BINARY, true, b"after".to_vec()),
            ]
        );
        assert_eq!(socket.inner.writes.len(), 1, "one vectored write");
    }

    /// Every length encoding (7, 16 and 64 bits) reads back as written,
    /// through writes that take a few bytes at a time.
    #[tokio::test]
    async fn frames_of_every_size_survive_short_writes() {
        let sizes = [
            0,
            1,
            125,
            126,
            127,
            SHARE,
            SHARE + 1,
            65_535,
            65_536,
            70_000,
        ];
        for limit in [1, 7, 1000, usize::MAX] {
            let mut socket = Coalesce::new(Recorder::new(limit));
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
                .collect();
            for p in &payloads {
                socket
                    .push_data(Data::Binary, Bytes::from(p.clone()))
                    .unwrap();
            }
            flush(&mut socket).await;
            let got: Vec<Vec<u8>> = parse(&socket.inner.bytes)
                .into_iter()
                .map(|(_, _, p)| p)
                .collect();
            assert_eq!(got, payloads, "writes of at most {limit} bytes");
            assert_eq!(socket.pending(), 0);
        }
    }

    /// Control frames go out at once; after a close, no data is taken.
    #[tokio::test]
    async fn a_close_goes_out_at_once_and_ends_the_data() {
        let mut socket = Coalesce::new(Recorder::new(usize::MAX));
        socket
            .push_data(Data::Text, Bytes::from_static(b"last"))
            .unwrap();
        socket.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
        assert_eq!(
            socket.inner.writes,
            [6 + 4],
            "the close and what waited, without a flush"
        );
        assert!(socket
            .push_data(Data::Text, Bytes::from_static(b"late"))
            .is_err());
        let frames = parse(&socket.inner.bytes);
        assert_eq!(frames[1], (0x8, true, vec![0x03, 0xe8]));
    }

    /// A client that sends pings and reads nothing is cut off once the
    /// pongs back up.
    #[tokio::test]
    async fn unread_pongs_are_bounded() {
        // A peer that takes one byte and then nothing more.
        let (stuck, _peer) = tokio::io::duplex(1);
        let mut socket = Coalesce::new(stuck);
        let pong = [0x8A, 0x7D]
            .into_iter()
            .chain([0u8; 125])
            .collect::<Vec<u8>>();
        let mut sent = 0;
        let failed = loop {
            match std::future::poll_fn(|cx| Pin::new(&mut socket).poll_write(cx, &pong)).await {
                Ok(_) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10_000, "never cut off");
        };
        assert_eq!(failed.to_string(), "the client reads nothing");
        assert!(socket.tail.len() <= MAX_CONTROL_BACKLOG + pong.len());
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
}
