//! The HTTP routes, one function per route (after warp's `todos` example).

use std::convert::Infallible;
use std::path::PathBuf;

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::connection;
use crate::server::Relay;
use shared::protocol::MAX_FRAME_BYTES;

/// Every route of the relay.
pub fn routes(relay: Relay) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let static_dir = relay.config().static_dir.clone();
    healthz()
        .or(websocket(relay))
        .or(app(static_dir))
        .recover(not_found)
}

/// `GET /healthz`: 200 while the relay serves.
pub fn healthz() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({ "status": "ok" })))
}

/// `GET /ws`: the WebSocket of one client process.
pub fn websocket(relay: Relay) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("ws")
        .and(warp::ws())
        .map(move |ws: warp::ws::Ws| {
            let relay = relay.clone();
            ws.max_message_size(MAX_FRAME_BYTES)
                .max_frame_size(MAX_FRAME_BYTES)
                .on_upgrade(move |socket| connection::serve(socket, relay))
        })
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

async fn not_found(_: Rejection) -> Result<impl Reply, Infallible> {
    Ok(warp::reply::with_status(
        "not found\n",
        StatusCode::NOT_FOUND,
    ))
}
