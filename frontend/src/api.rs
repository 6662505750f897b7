//! The relay's HTTP API, as the page calls it.

use shared::api::Credentials;
use shared::protocol::User;
use shared::wire;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, RequestInit, Response};

/// Why a sign-in did not go through, in words for the form (SPEC S2, S3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The relay's sentence: wrong password, or the rule a new name breaks.
    Refused(String),
    /// Too many attempts: wait this many seconds (SPEC S3).
    Throttled {
        /// The relay's sentence.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The relay could not be reached.
    Unreachable,
}

impl LoginError {
    /// What the form says.
    pub fn message(&self) -> String {
        match self {
            LoginError::Refused(message) => message.clone(),
            LoginError::Throttled { retry_after, .. } => {
                format!("Too many attempts. Try again in {retry_after} s.")
            }
            LoginError::Unreachable => {
                "Cannot reach the server. Check your connection and try again.".into()
            }
        }
    }
}

/// One call to the relay, with the browser's own `fetch` (cookies go
/// along: same origin). Returns the status and the body's text.
async fn call(method: &str, path: &str, json: Option<String>) -> Option<(u16, String)> {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(json) = json {
        let headers = Headers::new().ok()?;
        headers.set("content-type", "application/json").ok()?;
        init.set_headers(&headers);
        init.set_body(&json.into());
    }
    let fetch = web_sys::window()?.fetch_with_str_and_init(path, &init);
    let response: Response = JsFuture::from(fetch).await.ok()?.dyn_into().ok()?;
    let text = JsFuture::from(response.text().ok()?).await.ok()?;
    Some((response.status(), text.as_string().unwrap_or_default()))
}

/// `POST /api/login`.
pub async fn login(name: &str, password: &str) -> Result<User, LoginError> {
    let body = wire::encode_credentials(&Credentials {
        name: name.to_string(),
        password: password.to_string(),
    });
    let (status, text) = call("POST", "/api/login", Some(body))
        .await
        .ok_or(LoginError::Unreachable)?;
    if (200..300).contains(&status) {
        return wire::decode_user(&text).map_err(|_| LoginError::Unreachable);
    }
    let error = wire::decode_api_error(&text).ok();
    let message = error.as_ref().map_or_else(
        || format!("Sign-in failed ({})", u64::from(status)),
        |e| e.error.clone(),
    );
    match (status, error.and_then(|e| e.retry_after)) {
        (429, retry_after) => Err(LoginError::Throttled {
            message,
            retry_after: retry_after.unwrap_or(60),
        }),
        (500.., _) => Err(LoginError::Unreachable),
        _ => Err(LoginError::Refused(message)),
    }
}

/// `GET /api/me`: `Ok(Some(user))` when signed in, `Ok(None)` when not,
/// `Err` when the relay cannot be reached.
pub async fn me() -> Result<Option<User>, ()> {
    let answer = match early_me().await {
        Some(answer) => Some(answer),
        None => call("GET", "/api/me", None).await,
    };
    match answer {
        Some((200, text)) => wire::decode_user(&text).map(Some).map_err(|_| ()),
        Some((401, _)) => Ok(None),
        _ => Err(()),
    }
}

/// The answer to the `GET /api/me` the page sent while the app was still
/// loading (`window.chatMe`, a promise of `[status, body]` set by
/// `index.html`), so the first check waits for no round trip of its own.
/// Taken once: every later check asks the relay again.
async fn early_me() -> Option<(u16, String)> {
    let window = web_sys::window()?;
    let key = wasm_bindgen::JsValue::from_str("chatMe");
    let early = js_sys::Reflect::get(&window, &key).ok()?;
    let promise: js_sys::Promise = early.dyn_into().ok()?;
    js_sys::Reflect::delete_property(&window, &key).ok()?;
    let answer: js_sys::Array = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
    let status = answer.get(0).as_f64()?;
    let body = answer.get(1).as_string()?;
    Some((status as u16, body))
}

/// `POST /api/logout`.
pub async fn logout() -> bool {
    matches!(
        call("POST", "/api/logout", None).await,
        Some((200..=299, _))
    )
}
