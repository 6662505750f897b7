//! The relay's HTTP API, as the page calls it.

use gloo_net::http::Request;
use shared::api::{ApiError, Credentials};
use shared::protocol::User;

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

/// `POST /api/login`.
pub async fn login(name: &str, password: &str) -> Result<User, LoginError> {
    let body = Credentials {
        name: name.to_string(),
        password: password.to_string(),
    };
    let request = Request::post("/api/login")
        .json(&body)
        .map_err(|_| LoginError::Unreachable)?;
    let response = request.send().await.map_err(|_| LoginError::Unreachable)?;
    if response.ok() {
        return response
            .json::<User>()
            .await
            .map_err(|_| LoginError::Unreachable);
    }
    let status = response.status();
    let error = response.json::<ApiError>().await.ok();
    let message = error
        .as_ref()
        .map_or_else(|| format!("Sign-in failed ({status})"), |e| e.error.clone());
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
    let response = Request::get("/api/me").send().await.map_err(|_| ())?;
    match response.status() {
        200 => response.json::<User>().await.map(Some).map_err(|_| ()),
        401 => Ok(None),
        _ => Err(()),
    }
}

/// `POST /api/logout`.
pub async fn logout() -> bool {
    match Request::post("/api/logout").send().await {
        Ok(response) => response.ok(),
        Err(_) => false,
    }
}
