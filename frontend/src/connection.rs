//! The one WebSocket between this page and the relay (SPEC U2, R1, R2).
//!
//! [`spawn`] keeps a link for the life of the signed-in page: open `/ws`,
//! send the `hello` the model prepares (with where each conversation left
//! off), report every frame, send a heartbeat every [`HEARTBEAT`] and treat
//! a relay silent for [`HEARTBEAT_TIMEOUT`] as gone. When the socket ends it
//! reports [`ConnState::Reconnecting`] and tries again after a jittered
//! exponential backoff capped at [`MAX_BACKOFF`]. A close with
//! `SIGNED_OUT`, or a refused connection while `/api/me` says "not signed
//! in", ends the link with [`Event::SignedOut`].
//!
//! It is driven by the socket's and the timers' own callbacks rather than
//! by an async loop over channels: the same behaviour in a fraction of the
//! browser app's code. Frames go straight to the socket once the relay has
//! welcomed it; until then the model keeps them pending and resends them.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use gloo_timers::callback::{Interval, Timeout};
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
    let scale = 0.5 + 0.5 * jitter.clamp(0.0, 1.0);
    // In whole milliseconds, as the timer takes it: `Duration::mul_f64`
    // would bring its float conversion checks into the app.
    Duration::from_millis((ceiling.as_millis() as f64 * scale) as u64)
}

/// The page's end of the link: send frames, stop it.
#[derive(Clone)]
pub struct Link(Rc<Inner>);

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

impl PartialEq for Link {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// The link's state, shared by the page and the socket's and timers'
/// callbacks (which hold it weakly: stopping the link frees everything).
struct Inner {
    url: String,
    hello: Rc<dyn Fn() -> ClientMsg>,
    on_event: Callback<Event>,
    /// The current socket, if one is open or opening.
    socket: RefCell<Option<Socket>>,
    /// The relay has welcomed the current socket.
    connected: Cell<bool>,
    stopped: Cell<bool>,
    /// Reconnect attempts since the last welcomed connection.
    attempt: Cell<u32>,
    /// When the relay was last heard from (ms since the epoch).
    last_heard: Cell<f64>,
    nonce: Cell<u64>,
    /// The heartbeat of the current socket, or the wait before the next one.
    timer: RefCell<Option<Timer>>,
}

#[allow(dead_code)] // held only to be dropped, which cancels it
enum Timer {
    Heartbeat(Interval),
    Retry(Timeout),
}

impl Link {
    /// Sends a frame if the relay has welcomed this connection; false
    /// otherwise (messages stay pending in the model and are resent).
    pub fn send(&self, msg: ClientMsg) -> bool {
        self.0.connected.get() && self.0.send(&msg)
    }

    /// True while the relay has welcomed the current connection.
    pub fn is_connected(&self) -> bool {
        self.0.connected.get()
    }

    /// Ends the link: closes the socket, cancels the timers.
    pub fn stop(&self) {
        self.0.stopped.set(true);
        self.0.tear_down();
    }
}

/// Starts the link. `hello` makes the first frame of each connection;
/// `on_event` hears everything.
pub fn spawn(url: String, hello: Rc<dyn Fn() -> ClientMsg>, on_event: Callback<Event>) -> Link {
    let inner = Rc::new(Inner {
        url,
        hello,
        on_event,
        socket: RefCell::new(None),
        connected: Cell::new(false),
        stopped: Cell::new(false),
        attempt: Cell::new(0),
        last_heard: Cell::new(0.0),
        nonce: Cell::new(0),
        timer: RefCell::new(None),
    });
    connect(&inner);
    Link(inner)
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

impl Inner {
    fn send(&self, msg: &ClientMsg) -> bool {
        self.socket
            .borrow()
            .as_ref()
            .is_some_and(|s| s.ws.send_with_str(&wire::encode_client(msg)).is_ok())
    }

    /// Closes the socket and cancels the timer. They are dropped after the
    /// callback now running (perhaps one of theirs) has returned.
    fn tear_down(&self) {
        self.connected.set(false);
        let parts = (self.socket.take(), self.timer.take());
        wasm_bindgen_futures::spawn_local(async move { drop(parts) });
    }
}

/// A handler that runs `f` with the link while it exists.
fn handler(
    weak: &Weak<Inner>,
    f: impl Fn(&Rc<Inner>, JsValue) + 'static,
) -> Closure<dyn FnMut(JsValue)> {
    let weak = weak.clone();
    Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        if let Some(inner) = weak.upgrade() {
            f(&inner, event)
        }
    })
}

/// Opens a socket and starts its heartbeat.
fn connect(inner: &Rc<Inner>) {
    if inner.stopped.get() {
        return;
    }
    let Ok(ws) = WebSocket::new(&inner.url) else {
        return lost(inner, false);
    };
    inner.last_heard.set(js_sys::Date::now());
    let weak = Rc::downgrade(inner);
    let on_open = handler(&weak, |inner, _| {
        // A failed send closes the socket, which ends this connection.
        inner.send(&(inner.hello)());
    });
    // Frames are handled as they arrive: nothing queues between the
    // browser and the model.
    let on_message = handler(&weak, |inner, event| {
        inner.last_heard.set(js_sys::Date::now());
        let Some(text) = event.unchecked_into::<MessageEvent>().data().as_string() else {
            return; // binary: only proof of life
        };
        match wire::decode_server(&text) {
            Ok(msg) => {
                let welcome = matches!(msg, ServerMsg::Welcome { .. });
                if welcome {
                    inner.connected.set(true);
                }
                inner.on_event.emit(Event::Frame(msg));
                if welcome {
                    inner.on_event.emit(Event::State(ConnState::Connected));
                }
            }
            Err(problem) => warn(problem),
        }
    });
    let on_close = handler(&weak, |inner, event| {
        let code = event.unchecked_into::<CloseEvent>().code();
        if code == close_code::SIGNED_OUT {
            inner.stopped.set(true);
            inner.tear_down();
            return inner.on_event.emit(Event::SignedOut);
        }
        lost(inner, inner.connected.get());
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    *inner.socket.borrow_mut() = Some(Socket {
        ws,
        _handlers: [on_open, on_message, on_close],
    });
    let heartbeat = Interval::new(HEARTBEAT.as_millis() as u32, move || {
        let Some(inner) = weak.upgrade() else { return };
        let silent_ms = js_sys::Date::now() - inner.last_heard.get();
        if silent_ms > HEARTBEAT_TIMEOUT.as_millis() as f64 {
            return lost(&inner, inner.connected.get());
        }
        // Still opening: the timeout above decides.
        let open =
            inner.socket.borrow().as_ref().map(|s| s.ws.ready_state()) == Some(WebSocket::OPEN);
        if open {
            inner.nonce.set(inner.nonce.get() + 1);
            if !inner.send(&ClientMsg::Ping {
                nonce: inner.nonce.get(),
            }) {
                lost(&inner, inner.connected.get());
            }
        }
    });
    // This may run in the retry timeout's own callback: drop that after it.
    let retry = inner.timer.replace(Some(Timer::Heartbeat(heartbeat)));
    wasm_bindgen_futures::spawn_local(async move { drop(retry) });
}

/// The socket ended (`welcomed`: after the relay had welcomed it): say so
/// and try again after the backoff.
fn lost(inner: &Rc<Inner>, welcomed: bool) {
    inner.tear_down();
    if inner.stopped.get() {
        return;
    }
    if welcomed {
        inner.attempt.set(0);
        return retry(inner);
    }
    // Refused upgrades look like network errors to a page: ask whether the
    // session is still good.
    let inner = inner.clone();
    wasm_bindgen_futures::spawn_local(async move {
        if let Ok(None) = crate::api::me().await {
            inner.stopped.set(true);
            return inner.on_event.emit(Event::SignedOut);
        }
        retry(&inner);
    });
}

/// Reports [`ConnState::Reconnecting`] and connects again after the backoff.
fn retry(inner: &Rc<Inner>) {
    if inner.stopped.get() {
        return;
    }
    inner.on_event.emit(Event::State(ConnState::Reconnecting));
    let attempt = inner.attempt.get();
    let delay = backoff(attempt, js_sys::Math::random());
    inner.attempt.set(attempt.saturating_add(1));
    let weak = Rc::downgrade(inner);
    let timeout = Timeout::new(delay.as_millis() as u32, move || {
        if let Some(inner) = weak.upgrade() {
            connect(&inner);
        }
    });
    *inner.timer.borrow_mut() = Some(Timer::Retry(timeout));
}

fn warn(text: &str) {
    web_sys::console::warn_1(&text.into());
}
