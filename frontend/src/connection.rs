//! The one WebSocket between this page and the relay.
//!
//! [`spawn`] runs a loop for the life of the page: open `/ws`, say `hello`,
//! report [`ConnState::Connected`] on `welcome`, send a heartbeat every
//! [`HEARTBEAT`] and treat a relay silent for [`HEARTBEAT_TIMEOUT`] as gone;
//! when the socket ends, report [`ConnState::Reconnecting`] and try again
//! after a jittered exponential backoff capped at [`MAX_BACKOFF`] (SPEC R1).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use gloo_timers::future::sleep;
use shared::protocol::{ClientMsg, ServerMsg, PROTOCOL_VERSION};
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

    /// A CSS class naming the state.
    pub fn css_class(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Reconnecting => "reconnecting",
        }
    }
}

/// The relay's WebSocket URL for the page's own origin.
pub fn relay_url() -> String {
    let location = web_sys::window()
        .map(|w| w.location())
        .expect("the app runs in a window");
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

/// Stops the connection loop when asked (or when the page goes away).
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    stopped: Rc<Cell<bool>>,
}

impl ConnectionHandle {
    /// Ends the loop after the current socket.
    pub fn stop(&self) {
        self.stopped.set(true);
    }
}

/// Starts the connection loop; `on_state` hears every change of state.
pub fn spawn(url: String, on_state: Callback<ConnState>) -> ConnectionHandle {
    let stopped = Rc::new(Cell::new(false));
    let handle = ConnectionHandle {
        stopped: stopped.clone(),
    };
    wasm_bindgen_futures::spawn_local(async move {
        let mut attempt = 0;
        while !stopped.get() {
            if let Ok(socket) = WebSocket::open(&url) {
                if session(socket, &on_state).await {
                    attempt = 0;
                }
            }
            if stopped.get() {
                break;
            }
            on_state.emit(ConnState::Reconnecting);
            sleep(backoff(attempt, js_sys::Math::random())).await;
            attempt = attempt.saturating_add(1);
        }
    });
    handle
}

/// One socket's life; true if the relay welcomed us.
async fn session(socket: WebSocket, on_state: &Callback<ConnState>) -> bool {
    let (mut tx, mut rx) = socket.split();
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: Vec::new(),
    };
    if tx.send(Message::Text(hello.encode())).await.is_err() {
        return false;
    }
    let mut welcomed = false;
    let mut last_heard = js_sys::Date::now();
    let mut nonce = 0u64;
    loop {
        match select(rx.next(), sleep(HEARTBEAT)).await {
            Either::Left((Some(Ok(frame)), _)) => {
                last_heard = js_sys::Date::now();
                let Message::Text(text) = frame else { continue };
                match ServerMsg::decode(&text) {
                    Ok(ServerMsg::Welcome { .. }) => {
                        welcomed = true;
                        on_state.emit(ConnState::Connected);
                    }
                    Ok(ServerMsg::Error { message, .. }) => warn(&format!("relay: {message}")),
                    Ok(_) => {}
                    Err(problem) => warn(&problem),
                }
            }
            Either::Left((Some(Err(_)) | None, _)) => return welcomed,
            Either::Right(((), _)) => {
                let silent_ms = js_sys::Date::now() - last_heard;
                if silent_ms > HEARTBEAT_TIMEOUT.as_millis() as f64 {
                    return welcomed;
                }
                nonce += 1;
                let ping = ClientMsg::Ping { nonce };
                if tx.send(Message::Text(ping.encode())).await.is_err() {
                    return welcomed;
                }
            }
        }
    }
}

fn warn(text: &str) {
    web_sys::console::warn_1(&text.into());
}
