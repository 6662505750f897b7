//! The HTTP routes, one function per route (after warp's `todos` example).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use base64::Engine;
use flate2::{write::GzEncoder, Compression};
use sha2::{Digest, Sha256};
use warp::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS,
};
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
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
///
/// Files are sent gzip-compressed to clients that accept it (each file is
/// compressed once and kept while it is unchanged on disk). trunk's
/// content-hashed files are cached by browsers for a year without asking
/// again; `index.html`, which names them, is revalidated on every load.
pub fn app(dir: PathBuf) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let assets = Assets {
        dir,
        gzipped: Arc::default(),
    };
    warp::get()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("accept-encoding"))
        .and_then(
            move |path: warp::path::FullPath, accept_encoding: Option<String>| {
                let assets = assets.clone();
                async move {
                    if path.as_str().starts_with("/api/") {
                        return Err(warp::reject::not_found());
                    }
                    assets
                        .serve(path.as_str(), accepts_gzip(accept_encoding.as_deref()))
                        .await
                        .ok_or_else(warp::reject::not_found)
                }
            },
        )
}

/// The content type of the app's pages.
const HTML: &str = "text/html; charset=utf-8";

/// `Cache-Control` for content-hashed files: a new build has new names.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` for everything else (`index.html` above all): use the
/// cached copy only after checking it is still current.
pub const CACHE_REVALIDATE: &str = "no-cache";
/// The largest file the app route sends; the built app's files are a
/// fraction of this.
const MAX_ASSET_BYTES: u64 = 32 * 1024 * 1024;
/// Files smaller than this go uncompressed: gzip would save nothing.
const MIN_GZIP_BYTES: usize = 256;
/// How many compressed files are kept in memory (the built app has a
/// handful; when full, further files are compressed per request).
const MAX_GZIPPED_FILES: usize = 64;

/// The static folder and the compressed copies of its files.
#[derive(Debug, Clone)]
struct Assets {
    dir: PathBuf,
    gzipped: Arc<Mutex<HashMap<PathBuf, Gzipped>>>,
}

/// A file's gzip-compressed bytes, with what the file was when compressed.
#[derive(Debug, Clone)]
struct Gzipped {
    modified: Option<SystemTime>,
    len: u64,
    body: Bytes,
}

impl Assets {
    /// The response for `path`: the file it names, or `index.html`.
    async fn serve(&self, path: &str, gzip: bool) -> Option<Response> {
        let (file, meta) = match self.file_for(path).await {
            Some(found) => found,
            None => {
                let index = self.dir.join("index.html");
                let meta = tokio::fs::metadata(&index).await.ok()?;
                (index, meta)
            }
        };
        if !meta.is_file() || meta.len() > MAX_ASSET_BYTES {
            return None;
        }
        let name = file.file_name()?.to_str()?.to_string();
        let content_type = content_type(&name);
        let cache = if is_content_hashed(&name) {
            CACHE_IMMUTABLE
        } else {
            CACHE_REVALIDATE
        };
        let raw = Bytes::from(tokio::fs::read(&file).await.ok()?);
        // The page's policy names the hashes of its own inline scripts.
        let policy = (content_type == HTML).then(|| content_security_policy(&raw));
        let compressible = is_compressible(content_type);
        let (body, encoding) = if compressible && gzip && raw.len() >= MIN_GZIP_BYTES {
            (self.gzipped(&file, &meta, raw).await?, Some("gzip"))
        } else {
            (raw, None)
        };
        let mut response = Response::new(body.into());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        if let Some(policy) = policy.and_then(|p| HeaderValue::from_str(&p).ok()) {
            headers.insert(CONTENT_SECURITY_POLICY, policy);
        }
        if compressible {
            headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
        if let Some(encoding) = encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        Some(response)
    }

    /// The file a URL path names inside the static folder (a folder's
    /// `index.html`), or `None`. Paths that would leave the folder name nothing.
    async fn file_for(&self, path: &str) -> Option<(PathBuf, std::fs::Metadata)> {
        let mut file = self.dir.clone();
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            if segment.starts_with('.') || segment.contains('\\') {
                return None;
            }
            file.push(segment);
        }
        let meta = tokio::fs::metadata(&file).await.ok()?;
        if meta.is_dir() {
            file.push("index.html");
            let meta = tokio::fs::metadata(&file).await.ok()?;
            return Some((file, meta));
        }
        Some((file, meta))
    }

    /// The gzipped bytes of `file`, compressed now or kept from before.
    async fn gzipped(&self, file: &Path, meta: &std::fs::Metadata, raw: Bytes) -> Option<Bytes> {
        let (modified, len) = (meta.modified().ok(), meta.len());
        let held = lock(&self.gzipped).get(file).cloned();
        if let Some(held) = held.filter(|h| h.modified == modified && h.len == len) {
            return Some(held.body);
        }
        let body = tokio::task::spawn_blocking(move || gzip(&raw))
            .await
            .ok()??;
        let mut gzipped = lock(&self.gzipped);
        if gzipped.len() < MAX_GZIPPED_FILES || gzipped.contains_key(file) {
            gzipped.insert(
                file.to_path_buf(),
                Gzipped {
                    modified,
                    len,
                    body: body.clone(),
                },
            );
        }
        Some(body)
    }
}

/// The `Content-Security-Policy` of a page of the app: its scripts are the
/// relay's own files and the inline scripts of this very page (trunk's
/// loader, named by its hash), WebAssembly may be compiled, it talks only to
/// its own origin (`/api`, `/ws`), and it cannot be framed. Inline style
/// attributes are allowed (each user's colour is one); inline style
/// elements, plugins, `<base>` and foreign forms are not. A message that
/// got into the page as markup still could not run (SPEC C9: defence in
/// depth behind rendering text as text).
pub fn content_security_policy(page: &[u8]) -> String {
    let mut scripts = String::new();
    for script in inline_scripts(page) {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
        scripts.push_str(&format!(" 'sha256-{hash}'"));
    }
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'{scripts}; \
         style-src 'self'; style-src-attr 'unsafe-inline'; connect-src 'self'; \
         img-src 'self' data: blob:; font-src 'self'; manifest-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    )
}

/// The text of every `<script>` element without a `src` in `page`, as the
/// browser hashes it: the bytes between the tags.
fn inline_scripts(page: &[u8]) -> Vec<&[u8]> {
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(start) = find_ignoring_case(rest, b"<script") {
        let after = &rest[start + b"<script".len()..];
        let Some(open_end) = after.iter().position(|b| *b == b'>') else {
            break;
        };
        let attributes = &after[..open_end];
        let body = &after[open_end + 1..];
        let Some(close) = find_ignoring_case(body, b"</script") else {
            break;
        };
        if find_ignoring_case(attributes, b"src=").is_none() {
            found.push(&body[..close]);
        }
        rest = &body[close..];
    }
    found
}

fn find_ignoring_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// The map of compressed files. Never held across an await; a panic while
/// held leaves a map that is still consistent, so a poisoned lock is used.
fn lock(map: &Mutex<HashMap<PathBuf, Gzipped>>) -> MutexGuard<'_, HashMap<PathBuf, Gzipped>> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn gzip(raw: &[u8]) -> Option<Bytes> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(raw).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

/// True if an `Accept-Encoding` header accepts gzip: named with a
/// non-zero quality, or not named and `*` accepted.
fn accepts_gzip(header: Option<&str>) -> bool {
    let Some(header) = header else {
        return false;
    };
    let quality = |wanted: &str| {
        header.split(',').find_map(|part| {
            let mut params = part.split(';');
            let coding = params.next()?.trim();
            if !coding.eq_ignore_ascii_case(wanted) {
                return None;
            }
            let q = params
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            Some(q)
        })
    };
    quality("gzip")
        .or_else(|| quality("*"))
        .is_some_and(|q| q > 0.0)
}

/// trunk's content-hashed names: `NAME-<16 hex digits>` then `.EXT` or
/// `_bg.wasm` (e.g. `frontend-9f86d081884c7d65_bg.wasm`).
fn is_content_hashed(name: &str) -> bool {
    let Some((_, rest)) = name.rsplit_once('-') else {
        return false;
    };
    let hash = rest.get(..16).unwrap_or_default();
    hash.len() == 16
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(rest.as_bytes().get(16), Some(b'.' | b'_'))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => HTML,
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Types worth compressing: text, and WebAssembly.
fn is_compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || matches!(
            content_type,
            "application/wasm" | "application/json" | "image/svg+xml"
        )
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
