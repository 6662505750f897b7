//! The bodies of the HTTP API (`/api/*`), shared by the relay and the page.

use serde::{Deserialize, Serialize};

/// The body of `POST /api/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The name (SPEC S1).
    pub name: String,
    /// The password.
    pub password: String,
}

/// The body of every API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// For people: the page shows it as is.
    pub error: String,
    /// With HTTP 429: the seconds to wait before trying again (SPEC S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_json() {
        let credentials = Credentials {
            name: "alice".into(),
            password: "pw".into(),
        };
        assert_eq!(
            serde_json::to_string(&credentials).unwrap(),
            r#"{"name":"alice","password":"pw"}"#
        );
        let throttled = ApiError {
            error: "Too many attempts".into(),
            retry_after: Some(30),
        };
        assert_eq!(
            serde_json::to_string(&throttled).unwrap(),
            r#"{"error":"Too many attempts","retry_after":30}"#
        );
        let plain: ApiError =
            serde_json::from_str(r#"{"error":"Wrong name or password"}"#).unwrap();
        assert_eq!(plain.retry_after, None);
    }
}
