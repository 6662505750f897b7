//! The load generator's clients of the three servers it compares: the
//! Chat relay (sign-in cookie, `hello`, JSON frames), the floor
//! (`/ws?pair=N&side=a|b`, raw frames) and the socket.io peer (Engine.IO v4
//! over a plain WebSocket: `0{…}` open, `40` connect, `42[…]` events,
//! `2`/`3` ping and pong).
//!
//! Every socket is bound to one of [`SOURCE_ADDRESSES`] loopback addresses
//! before it connects, so that tens of thousands of sockets do not run out
//! of ephemeral ports. Every benchmark message carries a marker with its
//! side and two times (intended and actual send, [`stamp`]), padded to
//! [`MESSAGE_BYTES`], so whichever server carried it, the receiver reads
//! the latency from the text alone.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use shared::protocol::{
    ClientMsg, ClientMsgId, ConversationId, ServerMsg, UserId, PROTOCOL_VERSION,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::floor::ws_config;

/// The largest frame a client accepts: a relay's `welcome` holds every
/// online user and every conversation's history, far over the 64 KiB a
/// server accepts from a client.
pub const CLIENT_MAX_MESSAGE: usize = 64 << 20;

/// Loopback addresses the client sockets are spread over (127.0.0.1 to
/// 127.0.0.N; each has its own ~28,000 ephemeral ports).
pub const SOURCE_ADDRESSES: usize = 8;
/// The size of every benchmark message's text, in bytes.
pub const MESSAGE_BYTES: usize = 100;
/// How long any one step of setting a socket up may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A client socket.
pub type Sock = WebSocketStream<TcpStream>;

/// Which server a run loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The Chat relay.
    Chat,
    /// The bare forwarder (`bench::floor`).
    Floor,
    /// The Node socket.io relay in `bench/peers/socketio`.
    Socketio,
}

/// A signed-in account of the Chat relay.
#[derive(Debug, Clone)]
pub struct Account {
    /// The relay's id of the user.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The `Cookie` header value of its session.
    pub cookie: String,
}

/// Reads the accounts file written by `load accounts`: `id name cookie` per line.
pub fn read_accounts(path: &Path) -> Result<Vec<Account>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading accounts from {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let id = words.next().context("no id")?.parse()?;
            let name = words.next().context("no name")?.to_string();
            let cookie = words.next().context("no cookie")?.to_string();
            Ok(Account { id, name, cookie })
        })
        .collect()
}

/// The monotonic time base every stamp is measured from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's time base.
pub fn now_nanos() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `nanos` after the time base.
pub fn instant_at(nanos: u64) -> Instant {
    epoch() + Duration::from_nanos(nanos)
}

const MARK: &str = "@@";

/// A benchmark message's text: the marker, the sender's side, the intended
/// and the actual send time, padded to [`MESSAGE_BYTES`].
pub fn stamp(side: char, intended: u64, sent: u64) -> String {
    let mut text = format!("{MARK}{side}{intended:020}{sent:020}");
    while text.len() < MESSAGE_BYTES {
        text.push('x');
    }
    text
}

/// The side and the two times of the benchmark message inside `frame`, if any.
pub fn read_stamp(frame: &str) -> Option<(char, u64, u64)> {
    let at = frame.find(MARK)? + MARK.len();
    let rest = frame.get(at..at + 41)?;
    let side = rest.chars().next()?;
    let intended = rest.get(1..21)?.parse().ok()?;
    let sent = rest.get(21..41)?.parse().ok()?;
    Some((side, intended, sent))
}

/// Opens a WebSocket to `path` on `server` from source address `index`.
pub async fn open(
    server: SocketAddr,
    index: usize,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<Sock> {
    let last = u8::try_from(index % SOURCE_ADDRESSES).unwrap_or(0);
    let source = Ipv4Addr::new(127, 0, 0, 1 + last);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.set_nodelay(true)?;
    let tcp = in_time(socket.connect(server))
        .await
        .with_context(|| format!("connecting from {source} to {server}"))?;
    let client_config = ws_config()
        .max_message_size(Some(CLIENT_MAX_MESSAGE))
        .max_frame_size(Some(CLIENT_MAX_MESSAGE))
        .max_write_buffer_size(usize::MAX);
    let mut request = format!("ws://{server}{path}").into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse()?);
    }
    let upgrade = tokio_tungstenite::client_async_with_config(request, tcp, Some(client_config));
    let (ws, _) = in_time(upgrade)
        .await
        .with_context(|| format!("upgrading {path}"))?;
    Ok(ws)
}

/// One step of a connection's set-up, given [`STEP_TIMEOUT`]: a server
/// that never answers fails the run in time, rather than hanging it.
async fn in_time<T, E>(step: impl std::future::Future<Output = Result<T, E>>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    Ok(tokio::time::timeout(STEP_TIMEOUT, step).await??)
}

/// The next text frame (answering Engine.IO pings on the way).
pub async fn next_text(ws: &mut Sock, target: Target) -> Result<String> {
    loop {
        let frame = tokio::time::timeout(STEP_TIMEOUT, ws.next())
            .await
            .context("no frame in time")?
            .context("socket closed")??;
        match frame {
            Message::Text(text) => {
                if target == Target::Socketio && text.as_str() == "2" {
                    ws.send(Message::text("3")).await?;
                    continue;
                }
                return Ok(text.as_str().to_string());
            }
            Message::Close(close) => bail!("closed by the server: {close:?}"),
            _ => {}
        }
    }
}

/// One connected client of any target, ready to send benchmark messages.
#[derive(Debug)]
pub struct Client {
    /// The socket.
    pub ws: Sock,
    /// Which server it talks to.
    pub target: Target,
    /// Its side of the dialog: 'a' or 'b'.
    pub side: char,
    /// The Chat conversation of its dialog.
    conversation: ConversationId,
    /// The live Chat conversations its `welcome` listed: an earlier run's
    /// dialog still live (its users within the offline grace) is reopened
    /// as it is (SPEC C1), with no `started`.
    live: Vec<ConversationId>,
    sent: u64,
}

impl Client {
    /// A connected, signed-in (where it applies) client of `target`, not
    /// yet in a dialog. `index` numbers the socket (it picks the source
    /// address, the floor's pair and side, the socket.io room).
    pub async fn connect(
        target: Target,
        server: SocketAddr,
        index: usize,
        account: Option<&Account>,
    ) -> Result<Client> {
        let side = if index.is_multiple_of(2) { 'a' } else { 'b' };
        let mut live = Vec::new();
        let mut sent = 0;
        let ws = match target {
            Target::Chat => {
                let account = account.context("the Chat relay needs accounts")?;
                let headers = [
                    ("Origin", format!("http://{server}")),
                    ("Cookie", account.cookie.clone()),
                ];
                let mut ws = open(server, index, "/ws", &headers).await?;
                let hello = ClientMsg::Hello {
                    protocol: PROTOCOL_VERSION,
                    resume: vec![],
                };
                ws.send(Message::text(hello.encode())).await?;
                let welcome = next_text(&mut ws, target).await?;
                match ServerMsg::decode(&welcome).map_err(anyhow::Error::msg)? {
                    ServerMsg::Welcome {
                        me, conversations, ..
                    } => {
                        // Its ids go on from the last one the relay holds
                        // from this user: one the relay still holds is
                        // taken for a resend (SPEC C6) and not delivered.
                        sent = conversations
                            .iter()
                            .flat_map(|c| &c.messages)
                            .filter(|m| m.author == me.id)
                            .map(|m| m.client_id.0)
                            .max()
                            .unwrap_or(0);
                        live = conversations
                            .iter()
                            .filter(|c| c.ended.is_none())
                            .map(|c| c.id)
                            .collect();
                    }
                    _ => bail!("expected welcome, got {welcome}"),
                }
                ws
            }
            Target::Floor => {
                let path = format!("/ws?pair={}&side={side}", index / 2);
                open(server, index, &path, &[]).await?
            }
            Target::Socketio => {
                let mut ws =
                    open(server, index, "/socket.io/?EIO=4&transport=websocket", &[]).await?;
                let open = next_text(&mut ws, target).await?;
                if !open.starts_with('0') {
                    bail!("expected an Engine.IO open packet, got {open}");
                }
                ws.send(Message::text("40")).await?;
                let connected = next_text(&mut ws, target).await?;
                if !connected.starts_with("40") {
                    bail!("expected a socket.io connect packet, got {connected}");
                }
                ws.send(Message::text(format!(r#"42["join","{}"]"#, index / 2)))
                    .await?;
                let joined = next_text(&mut ws, target).await?;
                if joined != r#"42["joined"]"# {
                    bail!("expected joined, got {joined}");
                }
                ws
            }
        };
        Ok(Client {
            ws,
            target,
            side,
            conversation: ConversationId(0),
            live,
            sent,
        })
    }

    /// Opens the dialog of clients `a` and `b` (Chat: `a` asks for it with
    /// `open`; the floor and socket.io paired them when they connected).
    pub async fn pair(a: &mut Client, b: &mut Client, b_user: u64) -> Result<()> {
        if a.target != Target::Chat {
            return Ok(());
        }
        let open = ClientMsg::Open {
            with: vec![UserId(b_user)],
        };
        a.ws.send(Message::text(open.encode())).await?;
        let conversation = loop {
            let text = next_text(&mut a.ws, a.target).await?;
            if text.starts_with(r#"{"type":"opened""#) {
                match ServerMsg::decode(&text).map_err(anyhow::Error::msg)? {
                    ServerMsg::Opened { conversation } => break conversation,
                    other => bail!("expected opened, got {other:?}"),
                }
            }
            if text.starts_with(r#"{"type":"error""#) {
                bail!("opening a dialog failed: {text}");
            }
        };
        a.conversation = conversation;
        b.conversation = conversation;
        if b.live.contains(&conversation) {
            return Ok(());
        }
        // b learns of it with `started`; wait for it so that nothing of
        // the set-up is still on its way when the run starts.
        loop {
            let text = next_text(&mut b.ws, b.target).await?;
            if text.starts_with(r#"{"type":"started""#) {
                return Ok(());
            }
        }
    }

    /// The frame that carries one benchmark message with these times.
    pub fn message(&mut self, intended: u64, sent: u64) -> Message {
        let text = stamp(self.side, intended, sent);
        match self.target {
            Target::Chat => {
                self.sent += 1;
                let msg = ClientMsg::Send {
                    conversation: self.conversation,
                    client_id: ClientMsgId(self.sent),
                    text,
                };
                Message::text(msg.encode())
            }
            Target::Floor => Message::text(text),
            Target::Socketio => Message::text(format!(r#"42["msg","{text}"]"#)),
        }
    }

    /// The answer a frame needs at once, if any (Engine.IO's pong).
    pub fn answer(&self, frame: &str) -> Option<Message> {
        (self.target == Target::Socketio && frame == "2").then(|| Message::text("3"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_read_back_from_any_wrapping() {
        let text = stamp('b', 12, 3_456_789);
        assert_eq!(text.len(), MESSAGE_BYTES);
        assert_eq!(read_stamp(&text), Some(('b', 12, 3_456_789)));
        let wrapped = format!(r#"{{"type":"message","message":{{"text":"{text}"}}}}"#);
        assert_eq!(read_stamp(&wrapped), Some(('b', 12, 3_456_789)));
        assert_eq!(read_stamp(r#"42["msg","@@a12"]"#), None);
        assert_eq!(read_stamp("no marker"), None);
    }
}
