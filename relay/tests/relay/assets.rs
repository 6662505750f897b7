//! The built app as browsers fetch it (SPEC O1, O2): compressed for
//! clients that accept gzip, trunk's content-hashed files cached for a year,
//! `index.html` revalidated on every load.

use std::io::Read;
use std::path::PathBuf;

use flate2::read::GzDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{config, TestRelay, HTTP_PATIENCE};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const WASM: &str = "frontend-0123456789abcdef_bg.wasm";
const JS: &str = "frontend-0123456789abcdef.js";
const CSS: &str = "style-fedcba9876543210.css";

/// An HTTP response with its body as bytes.
#[derive(Debug)]
struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as the browser sees it: decompressed when gzip-encoded.
    fn decoded(&self) -> Vec<u8> {
        match self.header("content-encoding") {
            Some("gzip") => {
                let mut out = Vec::new();
                GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .expect("a valid gzip body");
                out
            }
            None => self.body.clone(),
            Some(other) => panic!("unexpected content-encoding {other}"),
        }
    }
}

/// `GET path` with these request headers, over HTTP/1.1.
async fn fetch(relay: &TestRelay, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        relay.addr
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(HTTP_PATIENCE, tcp.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let body = raw[split + 4..].to_vec();
    let fetched = Fetched {
        status,
        headers,
        body,
    };
    assert_eq!(
        fetched
            .header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(fetched.body.len()),
        "{path}: a body of the announced length"
    );
    fetched
}

/// A relay serving a fresh [`built_app`] folder named `name`; the folder.
async fn serving_app(name: &str) -> (PathBuf, TestRelay) {
    let dir = built_app(name);
    let mut config = config();
    config.static_dir = dir.clone();
    (dir, TestRelay::start(config).await)
}

/// A static folder shaped like trunk's output, with compressible files of a
/// realistic size.
fn built_app(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chat-assets-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let index = format!(
        "<!doctype html><title>Chat</title><script type=module>import init from '/{JS}';init('/{WASM}')</script>{}",
        "<!-- padding -->".repeat(40)
    );
    std::fs::write(dir.join("index.html"), index).unwrap();
    let wasm: Vec<u8> = (0..20_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(dir.join(WASM), wasm).unwrap();
    std::fs::write(
        dir.join(JS),
        "export default function init() {}\n".repeat(100),
    )
    .unwrap();
    std::fs::write(dir.join(CSS), "body { color: black }\n".repeat(100)).unwrap();
    dir
}

/// SPEC O2: every file of the built app is sent gzip-compressed to a
/// browser that accepts it, decodes to the file, carries its type, and
/// hashed names are cached for a year while `index.html` is revalidated.
#[tokio::test]
async fn o2_the_app_is_sent_compressed_and_hashed_files_are_cached_for_a_year() {
    let (dir, relay) = serving_app("gzip").await;
    let gzip = [("Accept-Encoding", "gzip, deflate, br, zstd")];

    for (path, file, content_type, cache) in [
        (format!("/{WASM}"), WASM, "application/wasm", IMMUTABLE),
        (
            format!("/{JS}"),
            JS,
            "text/javascript; charset=utf-8",
            IMMUTABLE,
        ),
        (format!("/{CSS}"), CSS, "text/css; charset=utf-8", IMMUTABLE),
        (
            "/".to_string(),
            "index.html",
            "text/html; charset=utf-8",
            "no-cache",
        ),
        (
            "/index.html".to_string(),
            "index.html",
            "text/html; charset=utf-8",
            "no-cache",
        ),
        (
            "/c/42".to_string(),
            "index.html",
            "text/html; charset=utf-8",
            "no-cache",
        ),
    ] {
        let on_disk = std::fs::read(dir.join(file)).unwrap();
        let fetched = fetch(&relay, &path, &gzip).await;
        assert_eq!(fetched.status, 200, "{path}");
        assert_eq!(fetched.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(fetched.decoded(), on_disk, "{path}: decodes to the file");
        assert!(
            fetched.body.len() < on_disk.len() / 2,
            "{path}: {} bytes sent for {}",
            fetched.body.len(),
            on_disk.len()
        );
        assert_eq!(fetched.header("content-type"), Some(content_type), "{path}");
        assert_eq!(fetched.header("cache-control"), Some(cache), "{path}");
        assert_eq!(fetched.header("vary"), Some("accept-encoding"), "{path}");
        // The second time comes from the relay's compressed copy: the same.
        let again = fetch(&relay, &path, &gzip).await;
        assert_eq!(again.body, fetched.body, "{path}");
    }
    assert_eq!(fetch(&relay, "/api/nothing", &gzip).await.status, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Clients that do not accept gzip get the file as it is.
#[tokio::test]
async fn o2_clients_without_gzip_get_the_file_as_it_is() {
    let (dir, relay) = serving_app("plain").await;
    let wasm = std::fs::read(dir.join(WASM)).unwrap();
    for accept in [
        None,
        Some("identity"),
        Some("br"),
        Some("gzip;q=0, deflate"),
        Some("*;q=0"),
        Some("gzip;q=0, *"),
    ] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let fetched = fetch(&relay, &format!("/{WASM}"), &headers).await;
        assert_eq!(fetched.status, 200, "{accept:?}");
        assert_eq!(fetched.header("content-encoding"), None, "{accept:?}");
        assert_eq!(fetched.body, wasm, "{accept:?}");
        assert_eq!(
            fetched.header("cache-control"),
            Some(IMMUTABLE),
            "{accept:?}"
        );
    }
    for accept in ["*", "GZIP;q=0.5", "br;q=1, gzip;q=0.1"] {
        let fetched = fetch(&relay, &format!("/{WASM}"), &[("Accept-Encoding", accept)]).await;
        assert_eq!(fetched.header("content-encoding"), Some("gzip"), "{accept}");
        assert_eq!(fetched.decoded(), wasm, "{accept}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rebuilt `index.html` is served at once, compressed copy and all, and
/// nothing outside the static folder is ever served.
#[tokio::test]
async fn o2_a_rebuilt_index_is_served_at_once_and_nothing_outside_the_folder() {
    let (dir, relay) = serving_app("rebuilt").await;
    let gzip = [("Accept-Encoding", "gzip")];
    let first = fetch(&relay, "/", &gzip).await.decoded();

    let rebuilt = format!(
        "<!doctype html><title>Chat, rebuilt</title>{}",
        "x".repeat(2000)
    );
    std::fs::write(dir.join("index.html"), &rebuilt).unwrap();
    let second = fetch(&relay, "/", &gzip).await.decoded();
    assert_ne!(second, first);
    assert_eq!(second, rebuilt.as_bytes());

    let outside = dir.with_extension("secret");
    std::fs::write(&outside, "not for browsers").unwrap();
    let secret_name = outside.file_name().unwrap().to_str().unwrap();
    for path in [
        format!("/../{secret_name}"),
        format!("/%2e%2e/{secret_name}"),
        "/.hidden".to_string(),
    ] {
        let fetched = fetch(&relay, &path, &gzip).await;
        assert_eq!(
            fetched.decoded(),
            rebuilt.as_bytes(),
            "{path}: the app instead"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&outside);
}

/// SPEC C9, L1 (defence in depth): every page of the app carries a
/// Content-Security-Policy that lets in the relay's own scripts and the
/// page's own inline loader (by its hash) and nothing else: no other inline
/// script, no other origin to talk to, no framing. Every file says
/// `nosniff` and sends no referrer.
#[tokio::test]
async fn c9_pages_carry_a_policy_that_admits_only_their_own_scripts() {
    use base64::Engine;
    use sha2::{Digest, Sha256};

    let (dir, relay) = serving_app("policy").await;
    let loader = format!("import init from '/{JS}';init('/{WASM}')");
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&loader));
    for path in ["/", "/index.html", "/c/42"] {
        let page = fetch(&relay, path, &[]).await;
        let policy = page.header("content-security-policy").expect(path);
        let directive = |name: &str| {
            policy
                .split(';')
                .map(str::trim)
                .find(|d| d.split(' ').next() == Some(name))
                .unwrap_or_else(|| panic!("{path}: no {name} in {policy}"))
                .to_string()
        };
        assert_eq!(
            directive("script-src"),
            format!("script-src 'self' 'wasm-unsafe-eval' 'sha256-{hash}'"),
            "{path}: own files and the loader by its hash, never 'unsafe-inline'"
        );
        assert_eq!(directive("default-src"), "default-src 'none'");
        assert_eq!(directive("connect-src"), "connect-src 'self'");
        assert_eq!(directive("frame-ancestors"), "frame-ancestors 'none'");
        assert_eq!(directive("object-src"), "object-src 'none'");
        assert_eq!(directive("base-uri"), "base-uri 'none'");
        assert!(
            !directive("style-src").contains("unsafe-inline"),
            "{policy}"
        );
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    }
    let wasm = fetch(&relay, &format!("/{WASM}"), &[]).await;
    assert_eq!(wasm.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(wasm.header("content-security-policy"), None);

    // Each inline script is named; one with a `src` is the relay's own file.
    let page = format!(
        "<html><head><SCRIPT type=module>a()</SCRIPT><script src=\"/{JS}\"></script>\
         <script>\nb();\n</script></head></html>"
    );
    let policy = relay::filters::content_security_policy(page.as_bytes());
    let named: Vec<String> = ["a()", "\nb();\n"]
        .iter()
        .map(|s| {
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s))
            )
        })
        .collect();
    assert!(
        policy.contains(&format!(
            "script-src 'self' 'wasm-unsafe-eval' {} {};",
            named[0], named[1]
        )),
        "{policy}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
