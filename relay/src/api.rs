//! The HTTP API: sign-in, sign-out, who am I (SPEC S1–S5, O2), and the
//! checks in front of the WebSocket upgrade (SPEC L1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use shared::api::{ApiError, Credentials};
use shared::protocol::User;
use warp::http::{header, StatusCode};
use warp::reply::{self, Reply, Response};

use crate::auth;
use crate::hub::{now_millis, Command};
use crate::server::Relay;
use crate::sessions::LiveSession;
use crate::store::{StoreError, TokenHash};

/// The session cookie's name.
pub const COOKIE: &str = "chat_session";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ApiError {
        error: message.into(),
        retry_after: None,
    };
    reply::with_status(reply::json(&body), status).into_response()
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "store failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server cannot reach its store; try again shortly",
    )
}

const WRONG: &str = "Wrong name or password";

/// `POST /api/login`: signs in, or signs up with an unused name (SPEC S1–S4).
pub async fn login(
    relay: Relay,
    credentials: Credentials,
    addr: Option<SocketAddr>,
    forwarded_proto: Option<String>,
) -> Response {
    let ip = addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let key = auth::name_key(&credentials.name);
    if let Err(wait) = relay.login_wait(&key, ip).await {
        relay
            .metrics()
            .throttled_logins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return too_many(wait);
    }
    let store = relay.store();
    let user = match store.account_by_name(&credentials.name).await {
        Err(e) => return internal(&e),
        Ok(Some(account)) => {
            let password = credentials.password;
            let hash = account.password_hash.clone();
            let ok = blocking(move || auth::verify_password(&password, &hash)).await;
            if !ok {
                relay.login_failed(&key, ip).await;
                return error(StatusCode::UNAUTHORIZED, WRONG);
            }
            account.user
        }
        Ok(None) => {
            if let Err(rule) = auth::check_name(&credentials.name) {
                return error(StatusCode::BAD_REQUEST, rule);
            }
            if let Err(rule) = auth::check_password(&credentials.password) {
                return error(StatusCode::BAD_REQUEST, rule);
            }
            let password = credentials.password;
            let Ok(hash) = blocking(move || auth::hash_password(&password)).await else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Could not create the account",
                );
            };
            let color = auth::color_for_new_user();
            match store.create_account(&credentials.name, &hash, &color).await {
                Ok(user) => {
                    tracing::info!(user = user.id.0, "account created");
                    user
                }
                // Someone took the name a moment ago, with another password.
                Err(StoreError::NameTaken) => return error(StatusCode::UNAUTHORIZED, WRONG),
                Err(e) => return internal(&e),
            }
        }
    };
    relay.login_succeeded(&key, ip).await;

    let (token, hash) = auth::new_session_token();
    if let Err(e) = store.create_session(&hash, user.id, now_millis()).await {
        return internal(&e);
    }
    tracing::info!(user = user.id.0, "signed in");
    let secure = forwarded_proto.as_deref() == Some("https");
    let cookie = session_cookie(&token, relay.config().session_idle, secure);
    reply::with_header(reply::json(&user), header::SET_COOKIE, cookie).into_response()
}

fn too_many(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let body = ApiError {
        error: format!("Too many attempts: try again in {seconds} s"),
        retry_after: Some(seconds),
    };
    let reply = reply::with_status(reply::json(&body), StatusCode::TOO_MANY_REQUESTS);
    reply::with_header(reply, header::RETRY_AFTER, seconds.to_string()).into_response()
}

/// The `Set-Cookie` value for a new session (SPEC S4).
pub fn session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    let mut cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        max_age.as_secs()
    );
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// `POST /api/logout`: ends this browser's session; its tabs are closed (SPEC S5).
pub async fn logout(relay: Relay, cookie: Option<String>) -> Response {
    if let Some(token) = cookie.as_deref() {
        let hash = TokenHash::of(token);
        if let Err(e) = relay.store().delete_session(&hash).await {
            return internal(&e);
        }
        if let Some(session) = relay.sessions().detach(&hash) {
            tracing::info!(user = session.group.user.id.0, "signed out");
        }
        // Always: in cluster mode the browser's tabs may be on other relays.
        relay
            .hub()
            .send(Command::EndSession {
                session: crate::sessions::session_id(&hash),
            })
            .await;
    }
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let reply = reply::with_status(reply::reply(), StatusCode::NO_CONTENT);
    reply::with_header(reply, header::SET_COOKIE, clear).into_response()
}

/// `GET /api/me`: the signed-in user, or 401.
pub async fn me(relay: Relay, cookie: Option<String>) -> Response {
    match authenticate(&relay, cookie.as_deref()).await {
        Ok(session) => reply::json(&session.group.user).into_response(),
        Err(response) => response,
    }
}

/// The live session behind a cookie, or the response that refuses it.
pub async fn authenticate(relay: &Relay, cookie: Option<&str>) -> Result<LiveSession, Response> {
    let Some(token) = cookie else {
        return Err(error(StatusCode::UNAUTHORIZED, "Not signed in"));
    };
    let hash = TokenHash::of(token);
    let now = now_millis();
    let idle = u64::try_from(relay.config().session_idle.as_millis()).unwrap_or(u64::MAX);
    match relay.store().session_user(&hash, now, idle).await {
        Ok(Some(user)) => Ok(relay.sessions().attach(hash, user, now)),
        Ok(None) => {
            // Expired or unknown: make sure nothing of it lingers here.
            drop(relay.sessions().detach(&hash));
            Err(error(StatusCode::UNAUTHORIZED, "Not signed in"))
        }
        Err(e) => Err(internal(&e)),
    }
}

/// SPEC L1: is this `Origin` allowed to open the WebSocket? By default only
/// the page's own origin (same host as the request); with
/// `--allowed-origin`, exactly the listed ones.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return false;
    };
    if !allowed.is_empty() {
        return allowed.iter().any(|a| a.trim_end_matches('/') == origin);
    }
    let Some(host) = host else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// The user of an upgrade request, or the 401/403 that refuses it (SPEC L1).
pub async fn admit(
    relay: &Relay,
    origin: Option<&str>,
    host: Option<&str>,
    cookie: Option<&str>,
) -> Result<(User, LiveSession), Response> {
    if !origin_allowed(&relay.config().allowed_origins, origin, host) {
        return Err(error(StatusCode::FORBIDDEN, "This origin may not connect"));
    }
    let session = authenticate(relay, cookie).await?;
    Ok((session.group.user.clone(), session))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_only_the_pages_own_origin_by_default() {
        let host = Some("chat.example:8080");
        assert!(origin_allowed(&[], Some("http://chat.example:8080"), host));
        assert!(origin_allowed(&[], Some("https://chat.example:8080"), host));
        for forged in [
            "http://evil.example",
            "http://chat.example:8080.evil.example",
            "http://chat.example",
            "null",
            "",
        ] {
            assert!(!origin_allowed(&[], Some(forged), host), "{forged}");
        }
        assert!(!origin_allowed(&[], None, host), "no Origin, no upgrade");
        assert!(!origin_allowed(&[], Some("http://chat.example:8080"), None));
    }

    #[test]
    fn l1_with_a_list_exactly_the_listed_origins() {
        let allowed = vec![
            "https://a.example".to_string(),
            "https://b.example/".to_string(),
        ];
        assert!(origin_allowed(
            &allowed,
            Some("https://a.example"),
            Some("x")
        ));
        assert!(origin_allowed(
            &allowed,
            Some("https://b.example"),
            Some("x")
        ));
        assert!(
            !origin_allowed(&allowed, Some("http://x"), Some("x")),
            "the list replaces the default"
        );
        assert!(!origin_allowed(
            &allowed,
            Some("https://a.example.evil"),
            Some("x")
        ));
    }

    #[test]
    fn s4_cookie_flags() {
        let cookie = session_cookie("tok", Duration::from_secs(60), false);
        assert_eq!(
            cookie,
            "chat_session=tok; HttpOnly; SameSite=Strict; Path=/; Max-Age=60"
        );
        assert!(session_cookie("tok", Duration::from_secs(60), true).ends_with("; Secure"));
    }
}
