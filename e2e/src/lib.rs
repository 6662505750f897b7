//! The browser end-to-end harness: the built app (`dist/`), the real relay
//! on a free port, and as many independent headless Chromium browsers as a
//! scenario needs (each with its own cookies), driven over WebDriver.
//!
//! ```no_run
//! # async fn scenario() -> anyhow::Result<()> {
//! let stack = e2e::Stack::start(relay::Config::defaults()).await?;
//! let alice = stack.browser().await?;
//! alice.sign_in("alice", "correct horse battery").await?; // waits for "Connected"
//! alice.wait_for_text("h1", "Chat").await?;
//! # Ok(()) }
//! ```
//!
//! Needs `/usr/bin/chromium`, `/usr/bin/chromedriver` (or `CHROMIUM`,
//! `CHROMEDRIVER`) and a built app in `CHAT_DIST` (default `dist/`):
//! `cargo xtask test` provides all three. When one is missing the test
//! fails and says what to do; it never skips.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a scenario waits for something a user would see.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The built app, a running relay and a WebDriver server.
#[derive(Debug)]
pub struct Stack {
    addr: SocketAddr,
    config: relay::Config,
    stop: Option<oneshot::Sender<()>>,
    relay: Option<RelayTask>,
    driver: Child,
    driver_url: String,
    chromium: PathBuf,
    /// More relays of the same cluster ([`Stack::start_peer`]).
    peers: Vec<(oneshot::Sender<()>, RelayTask)>,
}

impl Stack {
    /// Starts the relay on a free port, serving the built app, and a
    /// chromedriver for the browsers.
    pub async fn start(mut config: relay::Config) -> Result<Self> {
        let dist = dist_dir();
        if !dist.join("index.html").is_file() {
            bail!(
                "no built app in {}: run `cargo xtask test` (it builds the app), \
                 or `trunk build --release` and set CHAT_DIST",
                dist.display()
            );
        }
        config.static_dir = dist;
        if config.db == relay::Config::defaults().db {
            config.db = ":memory:".into();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, relay) = spawn_relay(listener, config.clone());

        let chromium = tool("CHROMIUM", "/usr/bin/chromium")?;
        let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let port = free_port().await?;
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let stack = Stack {
            addr,
            config,
            stop: Some(stop),
            relay: Some(relay),
            driver,
            driver_url: format!("http://127.0.0.1:{port}"),
            chromium,
            peers: Vec::new(),
        };
        wait_for_port(port)
            .await
            .context("chromedriver did not start")?;
        Ok(stack)
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The app's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts another relay with the same flags on its own port: with
    /// `--redis`, a second relay of the same cluster. Returns its base URL,
    /// for [`Stack::browser_at`].
    pub async fn start_peer(&mut self) -> Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        self.peers.push(spawn_relay(listener, self.config.clone()));
        Ok(format!("http://{addr}"))
    }

    /// A new, independent browser: its own profile, so its own cookies.
    pub async fn browser(&self) -> Result<Browser> {
        self.browser_at(&self.url("")).await
    }

    /// A new, independent browser whose pages come from `base` (another
    /// relay of the cluster).
    pub async fn browser_at(&self, base: &str) -> Result<Browser> {
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    "--no-first-run",
                    "--window-size=1280,800",
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.driver_url)
            .await
            .context("opening a browser session")?;
        Ok(Browser {
            client,
            base: base.to_string(),
        })
    }

    /// Stops the relay (it closes every socket with 1012) and waits for it.
    pub async fn stop_relay(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(relay) = self.relay.take() {
            tokio::time::timeout(PATIENCE, relay)
                .await
                .context("the relay did not shut down")??
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }
}

impl Stack {
    /// Starts the relay again on the same address and with the same flags
    /// (after [`Stack::stop_relay`]): with a database file, sessions survive.
    pub async fn start_relay(&mut self) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (stop, relay) = spawn_relay(listener, self.config.clone());
        self.stop = Some(stop);
        self.relay = Some(relay);
        Ok(())
    }
}

type RelayTask = JoinHandle<Result<(), String>>;

fn spawn_relay(listener: TcpListener, config: relay::Config) -> (oneshot::Sender<()>, RelayTask) {
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn(relay::run(listener, config, async {
        let _ = stopped.await;
    }));
    (stop, relay)
}

/// A `redis-server` of the scenario's own, on a free port, in its own
/// folder; killed when dropped (cluster-mode scenarios, SPEC O4).
#[derive(Debug)]
pub struct Redis {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Redis {
    /// Starts `redis-server` (installed by `cargo xtask setup`); fails
    /// when it is missing.
    pub async fn start() -> Result<Redis> {
        let port = free_port().await?;
        let dir =
            std::env::temp_dir().join(format!("chat-e2e-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server: run `cargo xtask setup` as root")?;
        let redis = Redis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            dir,
        };
        wait_for_port(port)
            .await
            .context("redis-server did not start")?;
        Ok(redis)
    }

    /// Its URL, for `--redis`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One browser window, as one person would use it.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    base: String,
}

impl Browser {
    /// Navigates to a path of the app.
    pub async fn open(&self, path: &str) -> Result<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .with_context(|| format!("opening {path}"))
    }

    /// Waits until an element matching `css` shows `text`; returns it.
    /// On timeout the error says what the page showed instead.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Result<Element> {
        let deadline = Instant::now() + PATIENCE;
        let mut last_seen = String::from("(no such element)");
        loop {
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for element in elements {
                    if let Ok(shown) = element.text().await {
                        if shown.contains(text) {
                            return Ok(element);
                        }
                        last_seen = shown;
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("waited {PATIENCE:?} for {css:?} to show {text:?}; it showed {last_seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signs in through the page's form, as a person would, and waits until
    /// the chat is connected.
    pub async fn sign_in(&self, name: &str, password: &str) -> Result<()> {
        self.open("/").await?;
        self.submit_sign_in(name, password).await?;
        self.wait_for_text("[role=status]", "Connected").await?;
        Ok(())
    }

    /// Fills in and submits the sign-in form (the page must show it).
    pub async fn submit_sign_in(&self, name: &str, password: &str) -> Result<()> {
        let name_box = self.wait_for("#sign-in-name").await?;
        name_box.clear().await?;
        name_box.send_keys(name).await?;
        let password_box = self.client.find(Locator::Css("#sign-in-password")).await?;
        password_box.clear().await?;
        password_box.send_keys(password).await?;
        self.click_button(None, "Log in").await
    }

    /// Waits for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> Result<Element> {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for {css:?}"))
    }

    /// True if an element matches `css` now.
    pub async fn exists(&self, css: &str) -> Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// Clicks the button with this exact text, inside `within` (CSS) if given.
    pub async fn click_button(&self, within: Option<&str>, text: &str) -> Result<()> {
        let scope = within.map_or_else(
            || "//".to_string(),
            |css| format!("{}//", css_to_xpath(css)),
        );
        let xpath = format!("{scope}button[normalize-space()={}]", xpath_literal(text));
        let button = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::XPath(&xpath))
            .await
            .with_context(|| format!("waiting for the button {text:?}"))?;
        button
            .click()
            .await
            .with_context(|| format!("clicking {text:?}"))
    }

    /// Chooses a user in the "Online users" list (SPEC U1, C1).
    pub async fn choose_user(&self, name: &str) -> Result<()> {
        self.click_button(Some("ul[aria-label='Online users']"), name)
            .await
    }

    /// The names in the "Online users" list, in order.
    pub async fn online_users(&self) -> Result<Vec<String>> {
        self.texts("ul[aria-label='Online users'] button.user")
            .await
    }

    /// The trimmed text of every element matching `css`, in document order.
    pub async fn texts(&self, css: &str) -> Result<Vec<String>> {
        let value = self
            .client
            .execute(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim());",
                vec![css.into()],
            )
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    /// The value of `attribute` on every element matching `css`, in order.
    pub async fn attributes(&self, css: &str, attribute: &str) -> Result<Vec<String>> {
        let value = self
            .client
            .execute(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]) || '');",
                vec![css.into(), attribute.into()],
            )
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    /// The CSS selector of the conversation region with this title (SPEC C3).
    pub fn conversation(title: &str) -> String {
        format!("section[role=region][aria-label={}]", css_string(title))
    }

    /// Waits until the conversation region with this title is on the page.
    pub async fn wait_for_conversation(&self, title: &str) -> Result<Element> {
        self.wait_for(&Self::conversation(title)).await
    }

    /// Types a message into a conversation's "Message" box and presses Enter.
    pub async fn send_message(&self, title: &str, text: &str) -> Result<()> {
        let area = self
            .wait_for(&format!("{} textarea", Self::conversation(title)))
            .await?;
        area.send_keys(&format!("{text}{}", fantoccini::key::Key::Enter))
            .await?;
        Ok(())
    }

    /// Types into a conversation's "Message" box without sending.
    pub async fn type_message(&self, title: &str, text: &str) -> Result<()> {
        let area = self
            .wait_for(&format!("{} textarea", Self::conversation(title)))
            .await?;
        area.send_keys(text).await?;
        Ok(())
    }

    /// The confirmed messages of a conversation as (author, text), in order.
    pub async fn messages(&self, title: &str) -> Result<Vec<(String, String)>> {
        let css = format!(
            "{} [role=log] article.message:not(.pending)",
            Self::conversation(title)
        );
        let value = self
            .client
            .execute(
                "return [...document.querySelectorAll(arguments[0])]
                    .map(e => [e.querySelector('.author').textContent, e.querySelector('.text').textContent]);",
                vec![css.into()],
            )
            .await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Polls `check` until it returns `Some`, for up to `patience`.
    pub async fn eventually<T, F, Fut>(
        &self,
        patience: Duration,
        what: &str,
        mut check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(found) = check().await? {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!("waited {patience:?} for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Switches back to a window of this browser.
    pub async fn switch_back(&self, window: fantoccini::wd::WindowHandle) -> Result<()> {
        self.client
            .switch_to_window(window)
            .await
            .context("switching windows")
    }

    /// Saves a PNG of the window to `path` (folders created); returns its size in bytes.
    pub async fn screenshot(&self, path: &std::path::Path) -> Result<usize> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, &png)?;
        Ok(png.len())
    }

    /// Resizes the window, e.g. to a phone's 360 px width.
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.client
            .set_window_size(width, height)
            .await
            .context("resizing")
    }

    /// The `id` of the focused element.
    pub async fn focused_id(&self) -> Result<String> {
        let value = self
            .client
            .execute(
                "return document.activeElement ? document.activeElement.id : '';",
                vec![],
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// Reloads the page.
    pub async fn reload(&self) -> Result<()> {
        self.client.refresh().await.context("reloading")
    }

    /// The WebDriver client, for anything the helpers above do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Closes the browser.
    pub async fn close(self) -> Result<()> {
        self.client.close().await.context("closing the browser")
    }
}

/// A CSS string literal.
fn css_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An XPath string literal (XPath 1.0 has no escapes: split on quotes).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

/// The few CSS selectors the helpers scope by, as XPath.
fn css_to_xpath(css: &str) -> String {
    match css
        .strip_prefix("ul[aria-label='")
        .and_then(|r| r.strip_suffix("']"))
    {
        Some(label) => format!("//ul[@aria-label={}]", xpath_literal(label)),
        None => match css
            .strip_prefix("section[role=region][aria-label=")
            .and_then(|r| r.strip_suffix(']'))
        {
            Some(quoted) => format!(
                "//section[@aria-label={}]",
                xpath_literal(quoted.trim_matches('"'))
            ),
            None => panic!("css_to_xpath knows no {css:?}"),
        },
    }
}

fn dist_dir() -> PathBuf {
    std::env::var_os("CHAT_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist"))
}

fn tool(var: &str, default: &str) -> Result<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo xtask setup` as root (Debian packages chromium, chromium-driver)",
            path.display()
        );
    }
    Ok(path)
}

async fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

async fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}
