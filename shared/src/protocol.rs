//! The wire protocol: JSON text frames over one WebSocket.
//!
//! Every frame is an object with a `"type"` tag. The client opens with
//! [`ClientMsg::Hello`]; the relay answers [`ServerMsg::Welcome`] when it
//! speaks the same [`PROTOCOL_VERSION`], or [`ServerMsg::Error`] otherwise.
//! Errors are data: a machine-readable [`ErrorKind`] plus a human sentence.
//!
//! Changing anything here changes the wire: the golden tests at the bottom
//! pin the exact JSON so that such a change is always deliberate.

use serde::{Deserialize, Serialize};

/// The protocol version spoken by this build. Bumped on any incompatible
/// change to the frames below.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame the relay accepts, in bytes (SPEC L3). Larger frames
/// close the connection with [`close_code::MESSAGE_TOO_BIG`].
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// WebSocket close codes the relay uses, with the meaning the client gives them.
pub mod close_code {
    /// The relay is restarting: reconnect (SPEC R3).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Too many invalid frames (SPEC L3).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over [`super::MAX_FRAME_BYTES`] (SPEC L3).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// A frame sent by the browser app to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// The first frame of every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        protocol: u32,
    },
    /// An application-level heartbeat; the relay answers [`ServerMsg::Pong`]
    /// with the same nonce, so the page notices a dead relay (SPEC U2, R1).
    Ping {
        /// Echoed back unchanged.
        nonce: u64,
    },
}

/// A frame sent by the relay to the browser app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMsg {
    /// The answer to a compatible [`ClientMsg::Hello`].
    Welcome {
        /// The relay's [`PROTOCOL_VERSION`].
        protocol: u32,
    },
    /// The answer to [`ClientMsg::Ping`].
    Pong {
        /// The nonce of the ping.
        nonce: u64,
    },
    /// Something the client sent could not be accepted. The connection stays
    /// open unless a close frame follows.
    Error {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
}

/// Machine-readable error kinds carried by [`ServerMsg::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The frame is not valid protocol: not JSON, not text, or an unknown shape.
    BadFrame,
    /// The client speaks another [`PROTOCOL_VERSION`].
    UnsupportedProtocol,
    /// A frame other than `hello` arrived before the handshake.
    HelloRequired,
}

impl ErrorKind {
    /// A stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::UnsupportedProtocol => "unsupported_protocol",
            ErrorKind::HelloRequired => "hello_required",
        }
    }
}

impl ClientMsg {
    /// Parses one text frame. The error names the problem in words fit to be
    /// sent back in a [`ServerMsg::Error`].
    pub fn decode(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))
    }

    /// The JSON text of this frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }
}

impl ServerMsg {
    /// Parses one text frame from the relay.
    pub fn decode(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))
    }

    /// The JSON text of this frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }

    /// Shorthand for an error frame.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_samples() -> Vec<ClientMsg> {
        vec![
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
            },
            ClientMsg::Ping { nonce: 7 },
        ]
    }

    fn server_samples() -> Vec<ServerMsg> {
        vec![
            ServerMsg::Welcome {
                protocol: PROTOCOL_VERSION,
            },
            ServerMsg::Pong { nonce: 7 },
            ServerMsg::error(ErrorKind::BadFrame, "invalid frame: expected value"),
        ]
    }

    #[test]
    fn every_frame_survives_a_round_trip() {
        for msg in client_samples() {
            assert_eq!(ClientMsg::decode(&msg.encode()), Ok(msg));
        }
        for msg in server_samples() {
            assert_eq!(ServerMsg::decode(&msg.encode()), Ok(msg));
        }
    }

    /// The exact JSON on the wire. A failure here means the protocol changed:
    /// bump [`PROTOCOL_VERSION`] if old clients can no longer talk to the relay.
    #[test]
    fn golden_json() {
        let client: Vec<String> = client_samples().iter().map(ClientMsg::encode).collect();
        assert_eq!(
            client,
            [
                r#"{"type":"hello","protocol":1}"#,
                r#"{"type":"ping","nonce":7}"#
            ]
        );
        let server: Vec<String> = server_samples().iter().map(ServerMsg::encode).collect();
        assert_eq!(
            server,
            [
                r#"{"type":"welcome","protocol":1}"#,
                r#"{"type":"pong","nonce":7}"#,
                r#"{"type":"error","kind":"bad_frame","message":"invalid frame: expected value"}"#,
            ]
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for text in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"type":"hello"}"#,
            r#"{"type":"hello","protocol":"1"}"#,
            r#"{"type":"hello","protocol":1,"extra":true}"#,
            r#"{"type":"launch_missiles"}"#,
            "\u{0}\u{ffff}",
        ] {
            let err = ClientMsg::decode(text).expect_err(text);
            assert!(err.starts_with("invalid frame:"), "{err}");
        }
    }
}
