//! Drivers that put the relay under load from outside, as real clients
//! would: sign in over HTTP, open WebSockets with the session cookie and an
//! allowed Origin, speak the protocol.
//!
//! - `soak` (`cargo xtask soak`): churn for minutes, watching the relay's
//!   memory and open files.
//! - `load` (`cargo xtask bench`): one benchmark scenario against one
//!   server ([`scenario`]), through clients of the relay, the floor and the
//!   socket.io peer ([`client`]).
//! - `floor`: the bare WebSocket forwarder the relay is measured against
//!   ([`floor`]).

pub mod client;
pub mod floor;
pub mod scenario;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use shared::protocol::{ClientMsg, ServerMsg, User};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Signs in (or up) over HTTP; returns the `Cookie` header value.
pub async fn login(addr: SocketAddr, name: &str, password: &str) -> Result<String> {
    Ok(sign_in(addr, name, password).await?.0)
}

/// Signs in (or up) over HTTP; returns the `Cookie` header value and the user.
pub async fn sign_in(addr: SocketAddr, name: &str, password: &str) -> Result<(String, User)> {
    let body = serde_json::json!({ "name": name, "password": password }).to_string();
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!(
        "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let cookie = response
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(": ")?;
            name.eq_ignore_ascii_case("set-cookie").then_some(value)
        })
        .with_context(|| format!("no session cookie in: {response}"))?;
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    let user = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .with_context(|| format!("no user in: {response}"))?;
    Ok((cookie, user))
}

/// `GET path` over HTTP/1.1; the response body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Opens a WebSocket with the cookie and the page's origin, and says hello.
pub async fn connect(addr: SocketAddr, cookie: &str, hello: &ClientMsg) -> Result<(Ws, ServerMsg)> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("Origin", format!("http://{addr}").parse()?);
    request.headers_mut().insert("Cookie", cookie.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    ws.send(Message::text(hello.encode())).await?;
    let welcome = next(&mut ws, Duration::from_secs(10)).await?;
    if !matches!(welcome, ServerMsg::Welcome { .. }) {
        bail!("expected welcome, got {welcome:?}");
    }
    Ok((ws, welcome))
}

/// The next protocol frame (pings are skipped; tungstenite answers them).
pub async fn next(ws: &mut Ws, patience: Duration) -> Result<ServerMsg> {
    loop {
        let frame = tokio::time::timeout(patience, ws.next())
            .await
            .context("no frame in time")?
            .context("socket closed")??;
        if let Message::Text(text) = frame {
            return ServerMsg::decode(&text).map_err(anyhow::Error::msg);
        }
    }
}

/// A Linux process's resident memory (KiB) and open file descriptors.
pub fn process_usage(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

/// The least-squares slope of `points` (x, y).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise_around_a_flat_line() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat = [(0.0, 5.0), (1.0, 6.0), (2.0, 4.0), (3.0, 5.0)];
        assert!(slope(&flat).abs() < 0.5);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0);
    }
}
