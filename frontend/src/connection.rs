//! The one WebSocket between this page and the relay (SPEC U2, R1, R2).
//!
//! [`spawn`] runs a loop for the life of the signed-in page: open `/ws`,
//! send the `hello` the model prepares (with where each conversation left
//! off), report every frame, send a heartbeat every [`HEARTBEAT`] and treat
//! a relay silent for [`HEARTBEAT_TIMEOUT`] as gone. When the socket ends it
//! reports [`ConnState::Reconnecting`] and tries again after a jittered
//! exponential backoff capped at [`MAX_BACKOFF`]. A close with
//! `SIGNED_OUT`, or a refused connection while `/api/me` says "not signed
//! in", ends the loop with [`Event::SignedOut`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::{select, FutureExt, StreamExt};
use gloo_timers::future::sleep;
use shared::protocol::{close_code, ClientMsg, ServerMsg};
use shared::wire;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CloseEvent, MessageEvent, WebSocket};
use yew::Callback;

/// How often the page sends its own heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A relay that sends nothing for this long counts as gone.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(25);
/// The first reconnect delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest reconnect delay (SPEC R1).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Frames the page may queue for the relay.
const OUTBOX: usize = 64;

/// What the page knows about its link to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// The first attempt is under way.
    Connecting,
    /// The relay welcomed us.
    Connected,
    /// The link was lost; trying again.
    Reconnecting,
}

impl ConnState {
    /// What the page says.
    pub fn label(self) -> &'static str {
        match self {
            ConnState::Connecting => "Connecting…",
            ConnState::Connected => "Connected",
            ConnState::Reconnecting => "Reconnecting…",
        }
    }

    /// The CSS classes of the status line: `conn-status` and the state's.
    pub fn status_class(self) -> &'static str {
        match self {
            ConnState::Connecting => "conn-status connecting",
            ConnState::Connected => "conn-status connected",
            ConnState::Reconnecting => "conn-status reconnecting",
        }
    }

    /// A CSS class naming the state.
    pub fn css_class(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Reconnecting => "reconnecting",
        }
    }
}

/// What the loop reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The link changed state.
    State(ConnState),
    /// A frame from the relay.
    Frame(ServerMsg),
    /// The session is over: show the sign-in page.
    SignedOut,
}

/// The relay's WebSocket URL for the page's own origin.
pub fn relay_url() -> String {
    let Some(location) = web_sys::window().map(|w| w.location()) else {
        return "ws://localhost/ws".into();
    };
    let protocol = location.protocol().unwrap_or_default();
    let host = location.host().unwrap_or_default();
    ws_url(&protocol, &host)
}

/// `ws://HOST/ws` for a page served over `http:`, `wss://HOST/ws` over `https:`.
pub fn ws_url(page_protocol: &str, host: &str) -> String {
    let scheme = if page_protocol == "https:" {
        "wss"
    } else {
        "ws"
    };
    format!("{scheme}://{host}/ws")
}

/// The delay before reconnect attempt `attempt` (0-based): exponential from
/// [`MIN_BACKOFF`], capped at [`MAX_BACKOFF`], scaled by `jitter` in [0, 1)
/// to between half and all of it, so that clients do not return in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let ceiling = MIN_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The page's end of the link: send frames, stop the loop.
#[derive(Debug, Clone)]
pub struct Link {
    out: mpsc::Sender<ClientMsg>,
    connected: Rc<Cell<bool>>,
    stopped: Rc<Cell<bool>>,
}

impl PartialEq for Link {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.stopped, &other.stopped)
    }
}

impl Link {
    /// Sends a frame if the relay has welcomed this connection; false
    /// otherwise (messages stay pending in the model and are resent).
    pub fn send(&self, msg: ClientMsg) -> bool {
        self.connected.get() && self.out.clone().try_send(msg).is_ok()
    }

    /// True while the relay has welcomed the current connection.
    pub fn is_connected(&self) -> bool {
        self.connected.get()
    }

    /// Ends the loop.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.out.clone().close_channel();
    }
}

/// How one socket ended.
enum Outcome {
    /// It was welcomed, then lost.
    Lost { welcomed: bool },
    /// The relay ended the session.
    SignedOut,
    /// The page stopped the loop.
    Stopped,
}

/// Starts the connection loop. `hello` makes the first frame of each
/// connection; `on_event` hears everything.
pub fn spawn(url: String, hello: Rc<dyn Fn() -> ClientMsg>, on_event: Callback<Event>) -> Link {
    let (out, mut outbox) = mpsc::channel(OUTBOX);
    let link = Link {
        out,
        connected: Rc::new(Cell::new(false)),
        stopped: Rc::new(Cell::new(false)),
    };
    let this = link.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let mut attempt = 0;
        loop {
            let outcome = session(&url, &hello, &mut outbox, &this, &on_event).await;
            this.connected.set(false);
            match outcome {
                Outcome::Stopped => return,
                Outcome::SignedOut => return on_event.emit(Event::SignedOut),
                Outcome::Lost { welcomed: true } => attempt = 0,
                Outcome::Lost { welcomed: false } => {
                    // Refused upgrades look like network errors to a page:
                    // ask whether the session is still good.
                    if let Ok(None) = crate::api::me().await {
                        return on_event.emit(Event::SignedOut);
                    }
                }
            }
            if this.stopped.get() {
                return;
            }
            on_event.emit(Event::State(ConnState::Reconnecting));
            sleep(backoff(attempt, js_sys::Math::random())).await;
            attempt = attempt.saturating_add(1);
            // Whatever the page queued while disconnected is stale: pending
            // messages are resent from the model after the next welcome.
            while outbox.try_recv().is_ok() {}
        }
    });
    link
}

/// A browser WebSocket and its event handlers. Dropping it detaches the
/// handlers and closes the socket.
struct Socket {
    ws: WebSocket,
    _handlers: [Closure<dyn FnMut(JsValue)>; 3],
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

impl Socket {
    fn send(&self, msg: &ClientMsg) -> bool {
        self.ws.send_with_str(&wire::encode_client(msg)).is_ok()
    }
}

/// One socket, from opening to its end. Frames are handled as they arrive,
/// in the socket's `message` handler: nothing queues between the browser
/// and the model.
async fn session(
    url: &str,
    hello: &Rc<dyn Fn() -> ClientMsg>,
    outbox: &mut mpsc::Receiver<ClientMsg>,
    link: &Link,
    on_event: &Callback<Event>,
) -> Outcome {
    let Ok(ws) = WebSocket::new(url) else {
        return Outcome::Lost { welcomed: false };
    };
    let welcomed = Rc::new(Cell::new(false));
    let last_heard = Rc::new(Cell::new(js_sys::Date::now()));
    let (ended, mut closed) = oneshot::channel::<u16>();
    let ended = Cell::new(Some(ended));

    let on_open = {
        let (ws, hello) = (ws.clone(), hello.clone());
        Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
            // A failed send closes the socket, which ends the session.
            let _ = ws.send_with_str(&wire::encode_client(&hello()));
        })
    };
    let on_message = {
        let (welcomed, last_heard, link, on_event) = (
            welcomed.clone(),
            last_heard.clone(),
            link.clone(),
            on_event.clone(),
        );
        Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            last_heard.set(js_sys::Date::now());
            let Some(text) = event.unchecked_into::<MessageEvent>().data().as_string() else {
                return; // binary: only proof of life
            };
            match wire::decode_server(&text) {
                Ok(msg) => {
                    let welcome = matches!(msg, ServerMsg::Welcome { .. });
                    if welcome {
                        welcomed.set(true);
                        link.connected.set(true);
                    }
                    on_event.emit(Event::Frame(msg));
                    if welcome {
                        on_event.emit(Event::State(ConnState::Connected));
                    }
                }
                Err(problem) => warn(problem),
            }
        })
    };
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        if let Some(ended) = ended.take() {
            let _ = ended.send(event.unchecked_into::<CloseEvent>().code());
        }
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let socket = Socket {
        ws,
        _handlers: [on_open, on_message, on_close],
    };

    let mut nonce = 0u64;
    loop {
        let mut queued = outbox.next().fuse();
        let mut beat = sleep(HEARTBEAT).fuse();
        select! {
            code = &mut closed => {
                return match code {
                    Ok(close_code::SIGNED_OUT) => Outcome::SignedOut,
                    _ => Outcome::Lost { welcomed: welcomed.get() },
                };
            },
            queued = queued => match queued {
                Some(msg) => {
                    if !socket.send(&msg) {
                        return Outcome::Lost { welcomed: welcomed.get() };
                    }
                }
                None => return Outcome::Stopped,
            },
            () = beat => {
                let silent_ms = js_sys::Date::now() - last_heard.get();
                if silent_ms > HEARTBEAT_TIMEOUT.as_millis() as f64 {
                    return Outcome::Lost { welcomed: welcomed.get() };
                }
                // Still opening: the timeout above decides.
                if socket.ws.ready_state() == WebSocket::OPEN {
                    nonce += 1;
                    if !socket.send(&ClientMsg::Ping { nonce }) {
                        return Outcome::Lost { welcomed: welcomed.get() };
                    }
                }
            }
        }
        if link.stopped.get() {
            return Outcome::Stopped;
        }
    }
}

fn warn(text: &str) {
    web_sys::console::warn_1(&text.into());
}
