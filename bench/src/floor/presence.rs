//! The presence floor (`GET /presence`): the least a server can spend on
//! the presence burst, so the benchmark can measure the relay's presence
//! against it as it measures its messages against the forwarder.
//!
//! A client's first frame is its own online-list row, exactly as the relay
//! would write it (the floor has no accounts: the client says who it is).
//! The floor answers with a `welcome` holding every row the last batch
//! announced, adds the client to everyone who receives batches, and queues
//! its row for the next `presence` frame, `{"type":"presence","joined":[…]}`.
//! Batches follow the relay's rule (SPEC U4): a join after a quiet interval
//! goes out at once, later ones at most one batch per interval. So the
//! floor sends the same frames, of the same size, to the same sockets, but
//! checks no session, keeps no users, encodes no JSON and sends nothing
//! else. Each socket is one task, as in the relay: it reads the socket and
//! drains a bounded queue into it, feeding what is ready and flushing once;
//! a socket whose queue is full stops receiving batches.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{write_ready, OUTBOUND_QUEUE};

/// The relay's presence batch interval (its `--presence-batch` default).
pub const BATCH: Duration = Duration::from_millis(100);

/// What the sockets tell the roster task.
#[derive(Debug)]
pub(super) enum Event {
    /// A socket sent its row: welcome it and announce it.
    Join {
        key: u64,
        row: String,
        out: mpsc::Sender<Message>,
    },
    /// A socket closed.
    Leave { key: u64 },
}

/// The online list and the batches: one task, as the relay's hub.
pub(super) async fn roster(mut events: mpsc::UnboundedReceiver<Event>) {
    // Who receives batches.
    let mut online: HashMap<u64, mpsc::Sender<Message>> = HashMap::new();
    // The rows of every user the batches so far announced, comma-joined.
    let mut announced = String::new();
    // Rows waiting for the next batch, comma-joined.
    let mut pending = String::new();
    let mut last_batch: Option<Instant> = None;
    loop {
        let due = last_batch.map_or_else(Instant::now, |at| at + BATCH);
        tokio::select! {
            event = events.recv() => match event {
                None => return,
                Some(Event::Join { key, row, out }) => {
                    let welcome = format!(r#"{{"type":"welcome","online":[{announced}]}}"#);
                    if out.try_send(Message::text(welcome)).is_ok() {
                        online.insert(key, out);
                        push_row(&mut pending, &row);
                    }
                }
                Some(Event::Leave { key }) => {
                    online.remove(&key);
                }
            },
            () = tokio::time::sleep_until(due), if !pending.is_empty() => {
                let frame = Message::text(format!(
                    r#"{{"type":"presence","joined":[{pending}]}}"#
                ));
                // A socket that does not keep up is left out from now on.
                online.retain(|_, out| out.try_send(frame.clone()).is_ok());
                push_row(&mut announced, &pending);
                pending.clear();
                last_batch = Some(Instant::now());
            }
        }
    }
}

/// Appends `row` to the comma-joined `rows`.
fn push_row(rows: &mut String, row: &str) {
    if !rows.is_empty() {
        rows.push(',');
    }
    rows.push_str(row);
}

/// Serves one upgraded presence socket until it closes: one task reads
/// the socket and writes its queue, feeding every frame that is ready and
/// flushing once.
pub(super) async fn serve(on_upgrade: OnUpgrade, key: u64, events: mpsc::UnboundedSender<Event>) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    // A welcome holds every online row: far over a client frame's limit.
    let config = super::ws_config().max_write_buffer_size(usize::MAX);
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (out, mut queue) = mpsc::channel(OUTBOUND_QUEUE);
    let mut out = Some(out);
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(row))) => {
                    // The first frame is the row; later ones are ignored.
                    if let Some(out) = out.take() {
                        let row = row.as_str().to_string();
                        if events.send(Event::Join { key, row, out }).is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            Some(first) = queue.recv() => {
                if write_ready(&mut ws, first, &mut queue).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = events.send(Event::Leave { key });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    use crate::client::{open, Sock};

    async fn text(ws: &mut Sock) -> String {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        frame.to_text().unwrap().to_string()
    }

    /// A newcomer is welcomed with the rows the batches so far announced,
    /// and everyone online, itself included, learns of it in the next
    /// batch; joins within one interval of a batch share the next one.
    #[tokio::test]
    async fn newcomers_are_welcomed_and_announced_in_batches() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(super::super::run(listener, false));
        let mut a = open(addr, 0, "/presence", &[]).await.unwrap();
        a.send(Message::text(r#"[2,"ann",0]"#)).await.unwrap();
        assert_eq!(text(&mut a).await, r#"{"type":"welcome","online":[]}"#);
        // After a quiet spell, a join goes out at once.
        assert_eq!(
            text(&mut a).await,
            r#"{"type":"presence","joined":[[2,"ann",0]]}"#
        );
        let mut b = open(addr, 1, "/presence", &[]).await.unwrap();
        b.send(Message::text(r#"[3,"bo",1]"#)).await.unwrap();
        assert_eq!(
            text(&mut b).await,
            r#"{"type":"welcome","online":[[2,"ann",0]]}"#
        );
        let mut c = open(addr, 2, "/presence", &[]).await.unwrap();
        c.send(Message::text(r#"[4,"cy",2]"#)).await.unwrap();
        let welcome = text(&mut c).await;
        let both = r#"{"type":"presence","joined":[[3,"bo",1],[4,"cy",2]]}"#;
        let batch = text(&mut a).await;
        if batch == both {
            // b and c joined within one interval of ann's batch: one frame.
            assert_eq!(text(&mut b).await, both);
        } else {
            // The machine was slow enough for a batch between them.
            assert_eq!(batch, r#"{"type":"presence","joined":[[3,"bo",1]]}"#);
        }
        assert!(
            welcome.starts_with(r#"{"type":"welcome","online":[[2,"ann",0]"#),
            "{welcome}"
        );
    }

    /// A socket that is not a WebSocket upgrade is refused.
    #[tokio::test]
    async fn only_upgrades_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(super::super::run(listener, false));
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"GET /presence HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
}
