//! `app_bench --dist DIR --out FILE [--runs N]`: the browser app's size and
//! speed (issue 7's App goals), measured against a release build that is
//! already in DIR (`trunk build --release`; this builds nothing).
//!
//! It starts the relay serving DIR and headless Chromium, then measures:
//! - the gzipped size of the `.wasm`, the JS glue and the CSS;
//! - what the relay sends for them: compressed, and with which caching;
//! - the sign-in page's first render: navigation start to the sign-in form
//!   painted (its largest-contentful-paint entry), each run in a new browser
//!   (nothing cached), and again on reloads (hashed files cached);
//! - appending one message (Enter in the Message box, until the log shows
//!   it) to a conversation holding 1,000 messages, with the same append to
//!   an empty conversation in the same run as the baseline.
//!
//! Each speed figure is the median of `--runs` runs. The markdown section
//! "App" goes to FILE.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use e2e::{Browser, Stack};
use flate2::{write::GzEncoder, Compression};
use serde_json::json;
use shared::protocol::{
    ClientMsg, ClientMsgId, ConversationId, ServerMsg, UserId, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery";
/// Messages in the conversation before the timed appends.
const HISTORY: u64 = 1_000;
/// Messages the sending client puts in flight before reading the echoes.
const BATCH: u64 = 50;
/// Goals (issue 7).
const WASM_GOAL_KIB: f64 = 100.0;
const WASM_STRETCH_KIB: f64 = 70.0;
const JS_GOAL_KIB: f64 = 10.0;
const FIRST_RENDER_GOAL_MS: f64 = 300.0;
const APPEND_GOAL_MS: f64 = 16.0;

struct Args {
    dist: PathBuf,
    out: PathBuf,
    runs: usize,
}

fn args() -> Result<Args> {
    let mut dist = None;
    let mut out = None;
    let mut runs = 7;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dist" => dist = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "-h" | "--help" => {
                println!("app_bench --dist DIR --out FILE [--runs N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let dist = dist.context("--dist DIR (a trunk release build) is required")?;
    ensure!(runs >= 1, "--runs must be at least 1");
    Ok(Args {
        out: out.context("--out FILE is required")?,
        dist,
        runs,
    })
}

fn main() -> Result<()> {
    let args = args()?;
    ensure!(
        args.dist.join("index.html").is_file(),
        "no index.html in {}: run `trunk build --release` first",
        args.dist.display()
    );
    // The stack serves CHAT_DIST; set before any thread starts.
    std::env::set_var("CHAT_DIST", &args.dist);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let section = runtime.block_on(run(&args))?;
    std::fs::write(&args.out, &section)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{section}");
    Ok(())
}

/// A figure in the table.
struct Row {
    figure: String,
    measured: String,
    goal: String,
    met: Option<bool>,
}

fn row(figure: &str, measured: String, goal: &str, met: Option<bool>) -> Row {
    Row {
        figure: figure.into(),
        measured,
        goal: goal.into(),
        met,
    }
}

async fn run(args: &Args) -> Result<String> {
    let mut rows = Vec::new();
    let sizes = sizes(&args.dist)?;
    let size_of = |ext: &str| sizes.iter().find(|s| s.name.ends_with(ext));
    if let Some(wasm) = size_of(".wasm") {
        let kib = wasm.gzipped as f64 / 1024.0;
        let stretch = if kib <= WASM_STRETCH_KIB {
            " (stretch met)"
        } else {
            ""
        };
        rows.push(row(
            "`.wasm`, gzipped",
            format!(
                "{kib:.1} KiB ({:.1} KiB raw){stretch}",
                wasm.raw as f64 / 1024.0
            ),
            "≤ 100 KiB (stretch 70)",
            Some(kib <= WASM_GOAL_KIB),
        ));
    }
    if let Some(js) = size_of(".js") {
        let kib = js.gzipped as f64 / 1024.0;
        rows.push(row(
            "JS glue, gzipped",
            format!("{kib:.1} KiB ({:.1} KiB raw)", js.raw as f64 / 1024.0),
            "≤ 10 KiB",
            Some(kib <= JS_GOAL_KIB),
        ));
    }
    if let Some(css) = size_of(".css") {
        rows.push(row(
            "CSS, gzipped",
            format!("{:.1} KiB", css.gzipped as f64 / 1024.0),
            "—",
            None,
        ));
    }

    let mut config = relay::Config::defaults();
    // The timed conversation is filled quickly by one client.
    config.message_rate = 100_000.0;
    config.message_burst = 100_000.0;
    let stack = Stack::start(config).await?;
    let addr = stack.addr();

    // What browsers are sent.
    let served = served(addr, &sizes).await?;
    rows.extend(served);

    // Sign-in page, first visit and reload.
    let mut cold = Vec::new();
    for _ in 0..args.runs {
        let browser = stack.browser().await?;
        cold.push(sign_in_render_ms(&browser, false).await?);
        browser.close().await?;
    }
    let browser = stack.browser().await?;
    sign_in_render_ms(&browser, false).await?;
    let mut warm = Vec::new();
    for _ in 0..args.runs {
        warm.push(sign_in_render_ms(&browser, true).await?);
    }
    browser.close().await?;
    let cold_ms = median(&mut cold);
    let warm_ms = median(&mut warm);
    rows.push(row(
        "sign-in page first render, new browser (nothing cached)",
        format!("{cold_ms:.0} ms (sorted runs: {})", list(&cold, 0)),
        "≤ 300 ms",
        Some(cold_ms <= FIRST_RENDER_GOAL_MS),
    ));
    rows.push(row(
        "sign-in page render on reload (hashed files cached)",
        format!("{warm_ms:.0} ms (sorted runs: {})", list(&warm, 0)),
        "≤ 300 ms",
        Some(warm_ms <= FIRST_RENDER_GOAL_MS),
    ));

    // Appending a message: empty conversation, then one of 1,000.
    let (empty, full) = append_times(&stack, addr, args.runs).await?;
    let (mut empty, mut full) = (empty, full);
    let empty_ms = median(&mut empty);
    let full_ms = median(&mut full);
    rows.push(row(
        "append one message, empty conversation (baseline)",
        format!("{empty_ms:.2} ms (sorted runs: {})", list(&empty, 2)),
        "—",
        None,
    ));
    rows.push(row(
        "append one message, conversation of 1,000",
        format!(
            "{full_ms:.2} ms (sorted runs: {}); {:.1}× the baseline",
            list(&full, 2),
            full_ms / empty_ms.max(0.01)
        ),
        "≤ 16 ms",
        Some(full_ms <= APPEND_GOAL_MS),
    ));

    let mut out = String::new();
    writeln!(out, "## App\n")?;
    writeln!(
        out,
        "The release build in `{}`, served by the relay, measured in headless \
         Chromium on this machine; speed figures are medians of {} runs. \
         First render: navigation start to the sign-in form painted (its \
         largest-contentful-paint entry). Append: Enter in the Message box \
         until the conversation's log shows the message (event, model, render, \
         DOM update; a MutationObserver timestamps it).\n",
        shown_path(&args.dist).display(),
        args.runs
    )?;
    writeln!(out, "| figure | measured | goal | met |")?;
    writeln!(out, "|---|---|---|---|")?;
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.figure, r.measured, r.goal, met
        )?;
    }
    Ok(out)
}

/// The build's path as the report shows it: relative to the directory
/// the bench runs in (the checkout), so the report reads the same on
/// every machine.
fn shown_path(dist: &Path) -> &Path {
    std::env::current_dir()
        .ok()
        .and_then(|here| dist.strip_prefix(here).ok())
        .unwrap_or(dist)
}

/// One built file's size.
struct Size {
    name: String,
    raw: u64,
    gzipped: u64,
}

fn sizes(dist: &Path) -> Result<Vec<Size>> {
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(dist)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if [".wasm", ".js", ".css"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            let bytes = std::fs::read(&path)?;
            sizes.push(Size {
                name,
                raw: bytes.len() as u64,
                gzipped: gzip_len(&bytes)?,
            });
        }
    }
    sizes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(sizes)
}

fn gzip_len(bytes: &[u8]) -> Result<u64> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?.len() as u64)
}

/// Fetches each built file (and `/`) as a browser would, and reports how
/// it is sent.
async fn served(addr: SocketAddr, sizes: &[Size]) -> Result<Vec<Row>> {
    let mut compressed = Vec::new();
    let mut all_compressed = true;
    let mut all_immutable = true;
    for size in sizes {
        let head = fetch_head(addr, &format!("/{}", size.name)).await?;
        let encoding = header(&head, "content-encoding");
        all_compressed &= encoding.as_deref() == Some("gzip");
        all_immutable &= header(&head, "cache-control").as_deref()
            == Some("public, max-age=31536000, immutable");
        compressed.push(format!(
            "{} {}",
            size.name,
            encoding.unwrap_or_else(|| "uncompressed".into())
        ));
    }
    let index = fetch_head(addr, "/").await?;
    let index_cache = header(&index, "cache-control").unwrap_or_default();
    Ok(vec![
        row(
            "assets served compressed",
            compressed.join(", "),
            "compressed",
            Some(all_compressed),
        ),
        row(
            "caching",
            format!(
                "hashed files `{}`; `/` `{index_cache}`",
                if all_immutable {
                    "public, max-age=31536000, immutable"
                } else {
                    "not immutable"
                }
            ),
            "immutable for hashed files",
            Some(all_immutable && index_cache == "no-cache"),
        ),
    ])
}

/// The response head of `GET path` with `Accept-Encoding: gzip, br`.
async fn fetch_head(addr: SocketAddr, path: &str) -> Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip, deflate, br\r\n\
         Connection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Opens (or reloads) the sign-in page and returns the time from navigation
/// start to the sign-in form's paint.
async fn sign_in_render_ms(browser: &Browser, reload: bool) -> Result<f64> {
    if reload {
        browser.reload().await?;
    } else {
        browser.open("/").await?;
    }
    browser.wait_for("#sign-in-name").await?;
    // The largest paint once the form is there is the form's (the page
    // shows only a short "Loading…" before it).
    let value = browser
        .client()
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const form = document.querySelector('form.sign-in-card');
            new PerformanceObserver((list, observer) => {
                const entries = list.getEntries();
                const last = entries[entries.length - 1];
                if (last && form && form.contains(last.element)) {
                    observer.disconnect();
                    done(last.startTime);
                }
            }).observe({ type: 'largest-contentful-paint', buffered: true });
            setTimeout(() => done(-1), 5000);"#,
            vec![],
        )
        .await?;
    let ms = value.as_f64().context("a number")?;
    ensure!(ms >= 0.0, "no paint of the sign-in form was recorded");
    Ok(ms)
}

/// Sets up alice (in a browser) and bob (a protocol client) in a dialog,
/// times appends while it is empty, fills it to [`HISTORY`] messages from
/// bob, and times appends again.
async fn append_times(
    stack: &Stack,
    addr: SocketAddr,
    runs: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let alice = stack.browser().await?;
    alice.sign_in("alice", PASSWORD).await?;
    let cookie = bench::login(addr, "bob", PASSWORD).await?;
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        resume: vec![],
    };
    let (mut bob, welcome) = bench::connect(addr, &cookie, &hello).await?;
    let ServerMsg::Welcome { me, online, .. } = welcome else {
        bail!("expected a welcome");
    };
    // A welcome's online list may be one presence batch old (SPEC U4): if
    // alice came online within it, the next presence frame names her.
    let named_alice =
        |users: &[shared::protocol::User]| users.iter().find(|u| u.name == "alice").map(|u| u.id);
    let mut alice_id: Option<UserId> = named_alice(&online);
    let alice_id = loop {
        if let Some(id) = alice_id {
            break id;
        }
        if let ServerMsg::Presence { joined, .. } = bench::next(&mut bob, Duration::from_secs(10))
            .await
            .context("alice is not online for bob")?
        {
            alice_id = named_alice(&joined);
        }
    };
    send(
        &mut bob,
        &ClientMsg::Open {
            with: vec![alice_id],
        },
    )
    .await?;
    let conversation = loop {
        if let ServerMsg::Started { conversation } =
            bench::next(&mut bob, Duration::from_secs(10)).await?
        {
            break conversation.id;
        }
    };
    let title = "Conversation with bob";
    alice.wait_for_conversation(title).await?;

    let mut empty = Vec::new();
    for i in 0..runs {
        empty.push(append_ms(&alice, title, &format!("baseline {i}")).await?);
    }
    fill(&mut bob, conversation, me.id).await?;
    let total = HISTORY as usize + runs;
    alice
        .eventually(
            Duration::from_secs(60),
            "the conversation to fill",
            || async {
                let shown = shown_messages(&alice, title).await?;
                Ok((shown >= total).then_some(()))
            },
        )
        .await?;
    let mut full = Vec::new();
    for i in 0..runs {
        full.push(append_ms(&alice, title, &format!("after a thousand {i}")).await?);
    }
    alice.close().await?;
    Ok((empty, full))
}

async fn send(ws: &mut bench::Ws, msg: &ClientMsg) -> Result<()> {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(msg.encode()))
        .await?;
    Ok(())
}

/// Bob sends [`HISTORY`] messages, [`BATCH`] at a time, reading his echoes.
async fn fill(bob: &mut bench::Ws, conversation: ConversationId, me: UserId) -> Result<()> {
    let mut sent = 0;
    while sent < HISTORY {
        let batch = BATCH.min(HISTORY - sent);
        for i in 0..batch {
            let n = sent + i + 1;
            send(
                bob,
                &ClientMsg::Send {
                    conversation,
                    client_id: ClientMsgId(n),
                    text: format!(
                        "message {n} of the history, long enough to wrap like a real one"
                    ),
                },
            )
            .await?;
        }
        let mut echoed = 0;
        while echoed < batch {
            match bench::next(bob, Duration::from_secs(10)).await? {
                ServerMsg::Message { message, .. } if message.author == me => echoed += 1,
                ServerMsg::Error { message, .. } => bail!("bob's message refused: {message}"),
                _ => {}
            }
        }
        sent += batch;
    }
    Ok(())
}

async fn shown_messages(browser: &Browser, title: &str) -> Result<usize> {
    let css = format!(
        "{} [role=log] article.message:not(.pending)",
        Browser::conversation(title)
    );
    let value = browser
        .client()
        .execute(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .await?;
    Ok(value.as_u64().unwrap_or_default() as usize)
}

/// Types `text` into the conversation's Message box, presses Enter, and
/// returns the milliseconds until the log shows it; then waits for the
/// relay's confirmation so that runs do not overlap.
async fn append_ms(browser: &Browser, title: &str, text: &str) -> Result<f64> {
    let region = Browser::conversation(title);
    let value = browser
        .client()
        .execute_async(
            r#"const [css, text, done] = arguments;
            const region = document.querySelector(css);
            const log = region.querySelector('[role=log]');
            const area = region.querySelector('textarea');
            const before = log.childElementCount;
            let t0 = 0;
            const observer = new MutationObserver(() => {
                if (log.childElementCount > before) {
                    const t1 = performance.now();
                    observer.disconnect();
                    done(t1 - t0);
                }
            });
            observer.observe(log, { childList: true });
            area.value = text;
            t0 = performance.now();
            area.dispatchEvent(new KeyboardEvent('keydown',
                { key: 'Enter', bubbles: true, cancelable: true }));
            setTimeout(() => done(-1), 5000);"#,
            vec![json!(region), json!(text)],
        )
        .await?;
    let ms = value.as_f64().context("a number")?;
    ensure!(ms >= 0.0, "the message never showed");
    let pending = format!("{region} [role=log] article.pending");
    browser
        .eventually(
            Duration::from_secs(10),
            "the relay's confirmation",
            || async { Ok((!browser.exists(&pending).await?).then_some(())) },
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(ms)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}
