//! The HTTP routes, one function per route (after warp's `todos` example).

use std::convert::Infallible;
use std::path::PathBuf;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::api::{self, COOKIE};
use crate::connection;
use crate::server::Relay;
use crate::ws;
use shared::protocol::MAX_FRAME_BYTES;

/// The largest `POST /api/login` body.
const MAX_LOGIN_BODY: u64 = 4 * 1024;

/// Every route of the relay.
pub fn routes(relay: Relay) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let static_dir = relay.config().static_dir.clone();
    healthz(relay.clone())
        .or(metrics(relay.clone()))
        .or(login(relay.clone()))
        .or(logout(relay.clone()))
        .or(me(relay.clone()))
        .or(websocket(relay))
        .or(app(static_dir))
        .recover(rejection)
}

fn with_relay(relay: Relay) -> impl Filter<Extract = (Relay,), Error = Infallible> + Clone {
    warp::any().map(move || relay.clone())
}

/// `GET /metrics`: Prometheus text.
pub fn metrics(relay: Relay) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .map(move || relay.metrics().render())
}

/// `POST /api/login` with `{"name", "password"}`.
pub fn login(relay: Relay) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "login")
        .and(warp::post())
        .and(with_relay(relay))
        .and(warp::body::content_length_limit(MAX_LOGIN_BODY))
        .and(warp::body::json())
        .and(warp::addr::remote())
        .and(warp::header::optional::<String>("x-forwarded-proto"))
        .then(api::login)
}

/// `POST /api/logout`.
pub fn logout(relay: Relay) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "logout")
        .and(warp::post())
        .and(with_relay(relay))
        .and(warp::cookie::optional(COOKIE))
        .then(api::logout)
}

/// `GET /api/me`.
pub fn me(relay: Relay) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "me")
        .and(warp::get())
        .and(with_relay(relay))
        .and(warp::cookie::optional(COOKIE))
        .then(api::me)
}

/// `GET /healthz`: 200 while the relay serves; in cluster mode 503
/// `degraded` while Redis does not answer (local clients stay connected).
pub fn healthz(relay: Relay) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).map(move || {
        if relay.healthy() {
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({ "status": "ok" })),
                StatusCode::OK,
            )
        } else {
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({
                    "status": "degraded",
                    "redis": "unreachable",
                })),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    })
}

/// `GET /ws`: the WebSocket of one client process, for a signed-in user
/// from an allowed origin; 401 or 403 before the upgrade otherwise (SPEC L1).
pub fn websocket(relay: Relay) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("ws")
        .and(ws::upgrade())
        .and(with_relay(relay))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::cookie::optional(COOKIE))
        .then(
            |upgrade: ws::Upgrade,
             relay: Relay,
             origin: Option<String>,
             host: Option<String>,
             cookie: Option<String>| async move {
                let admitted = api::admit(
                    &relay,
                    origin.as_deref(),
                    host.as_deref(),
                    cookie.as_deref(),
                )
                .await;
                match admitted {
                    Err(refusal) => refusal,
                    Ok((user, session)) => upgrade
                        .accept(ws::config(MAX_FRAME_BYTES), move |socket| {
                            connection::serve(socket, relay, user, session.id)
                        }),
                }
            },
        )
}

/// The built app: files from the static folder, and `index.html` for any
/// other GET outside `/api` so that the app's own paths survive a reload.
pub fn app(dir: PathBuf) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let index = dir.join("index.html");
    let files = warp::get().and(warp::fs::dir(dir));
    let fallback = warp::get()
        .and(warp::path::full())
        .and_then(|path: warp::path::FullPath| async move {
            if path.as_str().starts_with("/api/") {
                Err(warp::reject::not_found())
            } else {
                Ok(())
            }
        })
        .untuple_one()
        .and(warp::fs::file(index));
    files.or(fallback)
}

/// Turns warp's rejections into plain answers with the right status.
async fn rejection(rejection: Rejection) -> Result<impl Reply, Infallible> {
    let (status, message) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_string())
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        (StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".to_string(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        )
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON".to_string())
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length is required".to_string(),
        )
    } else {
        (StatusCode::BAD_REQUEST, "bad request".to_string())
    };
    let body = api::ApiError {
        error: message,
        retry_after: None,
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), status))
}
