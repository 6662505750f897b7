//! `cargo xtask bench [--quick]`: the relay against a floor and a peer,
//! side by side, written up in BENCHMARKS.md.
//!
//! Three servers: the Chat relay (release build), the floor (a bare
//! WebSocket forwarder, `bench/src/floor.rs`: what the hardware and the
//! libraries allow) and a socket.io relay (`bench/peers/socketio`: what
//! most people would pick instead). The load generator (`bench/src/bin/load.rs`)
//! runs one scenario against one freshly started server and answers JSON;
//! this file starts the servers, interleaves the runs (relay, floor, peer,
//! repeated) and takes medians, because these shared machines vary 20–50 %
//! from run to run: every goal is a ratio against a baseline measured in
//! the same invocation, or a bound checked in it.
//!
//! `--idle` runs only the idle rounds, for the relay and the floor (the
//! memory goal of issue 7 in a minute or two), prints the figures and the
//! ratio, and writes `target/bench/idle.json`; BENCHMARKS.md is left alone.
//!
//! `--instructions [--against RELAY]...` counts the relay's user-space
//! instructions per message under callgrind, saturated by dialogs: a figure
//! that repeats to within a percent where timings vary by tens, for
//! comparing a change against another build of the relay
//! ([`instructions`]).
//!
//! `--quick` is a smoke run (debug build, a few hundred messages through
//! each server, the report written to `target/bench/BENCHMARKS.quick.md`)
//! with no timing goals checked; it fails if any server or run fails.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::{self, output_line};
use crate::root;
use crate::setup;

/// The relay's presence batch window (its `--presence-batch` default), which
/// the presence goal is measured against.
const PRESENCE_BATCH_MS: f64 = 100.0;
/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Messages per second of the unloaded latency run (one dialog).
const UNLOADED_RATE: f64 = 200.0;
/// Messages each side keeps in flight in a throughput run. One, as a
/// person's client sends: with more, the load generator packs several
/// messages into one write, which no chat client does, and the "maximum"
/// is then one that single messages at a fixed rate cannot reach (at half
/// of a maximum measured with 8 in flight, the relay was already over
/// capacity with single messages).
const WINDOW: usize = 1;
/// Messages each side keeps in flight in the write-coalescing run: with
/// one, every recipient has at most one frame waiting and no server can
/// write fewer than one call per message; with several, frames queue up
/// and a server that coalesces writes shows it.
const BURST_WINDOW: usize = 8;
/// Idle Chat sockets are tabs of users: this many per user (the relay's
/// default allows 32).
const TABS_PER_USER: usize = 30;

/// The relay's flags for every run: the per-user message rate limit
/// (SPEC L4) is lifted, since one benchmark user sends far more than a
/// person; logging is at `warn` (set through `RUST_LOG`).
const RELAY_FLAGS: &[&str] = &[
    "--message-rate",
    "1000000000",
    "--message-burst",
    "1000000000",
];

/// The sizes of a run.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    reps: usize,
    idle_checkpoints: Vec<usize>,
    dialogs: usize,
    growth_dialogs: Vec<usize>,
    growth_loads: Vec<f64>,
    warmup: &'static str,
    measure: &'static str,
    /// Idle: pause before memory is read; fixed rate: wait for stragglers.
    settle: &'static str,
    observers: usize,
    joiners: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            reps: 3,
            idle_checkpoints: vec![1_000, 5_000, 15_000],
            dialogs: 500,
            growth_dialogs: vec![10, 100, 1_000],
            growth_loads: vec![0.25, 0.75],
            warmup: "2s",
            measure: "5s",
            settle: "2s",
            observers: 5_000,
            joiners: 1_000,
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            reps: 1,
            idle_checkpoints: vec![100, 200],
            dialogs: 10,
            growth_dialogs: vec![],
            growth_loads: vec![],
            warmup: "500ms",
            measure: "1s",
            settle: "300ms",
            observers: 40,
            joiners: 10,
        }
    }

    fn accounts(&self) -> usize {
        let dialogs = self
            .growth_dialogs
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.dialogs);
        (2 * dialogs).max(self.observers + self.joiners)
    }

    fn idle_users(&self) -> usize {
        self.idle_checkpoints
            .last()
            .copied()
            .unwrap_or(0)
            .div_ceil(TABS_PER_USER)
    }
}

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Floor,
    /// The floor sending each frame back to its sender too (`floor
    /// --confirm`): as many frames per message as the relay, which
    /// confirms every message to its sender (SPEC C5, C6). Run in the
    /// throughput rounds only, where it bounds what confirming costs.
    FloorConfirming,
    Socketio,
}

const KINDS: [Kind; 3] = [Kind::Chat, Kind::Floor, Kind::Socketio];
/// The servers of the throughput rounds.
const THROUGHPUT_KINDS: [Kind; 4] = [
    Kind::Chat,
    Kind::Floor,
    Kind::FloorConfirming,
    Kind::Socketio,
];

impl Kind {
    /// The load generator's `--target`.
    fn target(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Floor | Kind::FloorConfirming => "floor",
            Kind::Socketio => "socketio",
        }
    }

    /// Its name in `runs.json` and in log file names.
    fn name(self) -> &'static str {
        match self {
            Kind::FloorConfirming => "floor-confirming",
            other => other.target(),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Chat => "Chat relay",
            Kind::Floor => "floor",
            Kind::FloorConfirming => "confirming floor",
            Kind::Socketio => "socket.io",
        }
    }
}

/// A running server.
struct Server {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Result<()> {
        // A server that died during a run is a failed run.
        if let Some(status) = self.child.try_wait()? {
            bail!("the {} exited during the run ({status})", self.kind.title());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    plan: Plan,
    bin: PathBuf,
    out: PathBuf,
    accounts: PathBuf,
    db: PathBuf,
}

pub fn bench(args: &[String]) -> Result<()> {
    let mut plan = Plan::full();
    let mut idle_only = false;
    let mut instructions_of: Option<Vec<PathBuf>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--reps" => {
                plan.reps = it
                    .next()
                    .context("--reps needs a number")?
                    .parse()
                    .context("--reps needs a number")?;
            }
            "--report" => return report_again(),
            "--idle" => idle_only = true,
            "--instructions" => instructions_of = Some(instructions_of.unwrap_or_default()),
            "--against" => {
                let path = it.next().context("--against needs a relay binary")?;
                instructions_of
                    .get_or_insert_with(Vec::new)
                    .push(PathBuf::from(path));
            }
            other => bail!(
                "unknown flag {other:?} (--quick, --idle, --instructions [--against RELAY]..., \
                 --reps N, --report)"
            ),
        }
    }
    let started = Instant::now();
    let root = root();
    let profile = if plan.quick { "debug" } else { "release" };
    cmd::step(&format!(
        "building the relay, the floor and the load generator ({profile})"
    ));
    let mut build = Command::new("cargo");
    build.current_dir(&root).arg("build");
    if !plan.quick {
        build.arg("--release");
    }
    build.args([
        "--package",
        "relay",
        "--package",
        "bench",
        "--bin",
        "relay",
        "--bin",
        "floor",
        "--bin",
        "load",
    ]);
    cmd::run(&mut build)?;
    if idle_only {
        return idle_rounds(root, profile, plan);
    }
    if let Some(against) = instructions_of {
        return instructions(root, profile, plan, against);
    }
    cmd::step("the socket.io peer");
    setup::ensure_socketio_peer()?;

    let bench = Bench::new(&root, profile, plan, "")?;
    let results = bench.run()?;
    if !bench.plan.quick {
        app_figures(&bench.out)?;
    }
    let report = report(&bench.plan, &results, started.elapsed())?;
    let path = if bench.plan.quick {
        bench.out.join("BENCHMARKS.quick.md")
    } else {
        root.join("BENCHMARKS.md")
    };
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(
        bench.out.join(if bench.plan.quick {
            "runs.quick.json"
        } else {
            "runs.json"
        }),
        serde_json::to_string_pretty(&serde_json::json!({
            "took_s": started.elapsed().as_secs_f64(),
            "date": results.date,
            "load_average": [results.load_average.0, results.load_average.1],
            "runs": results.raw,
        }))?,
    )?;
    if bench.plan.quick {
        results.check_flow()?;
    }
    cmd::step(&format!(
        "wrote {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Dialogs of the instruction count: enough to keep the relay busy under
/// callgrind (which runs it some 50 times slower) with batched turns, as
/// under full load.
const INSTRUCTION_DIALOGS: usize = 50;
/// Messages the relay has stamped before the count begins (set-up done,
/// the flow steady).
const INSTRUCTION_WARMUP_MESSAGES: u64 = 2_000;
/// How long instructions are counted.
const INSTRUCTION_WINDOW: Duration = Duration::from_secs(4);

/// `--instructions`: the user-space instructions the relay executes per
/// message it stamps, under valgrind's callgrind, for this build and each
/// `against` build, alternated over `plan.reps` rounds. Callgrind counts
/// instructions, not time, so the figure repeats to within about a
/// percent on a machine whose timings vary by tens; kernel work (the
/// socket calls) is not in it. Writes `target/bench/instructions.json`.
fn instructions(root: PathBuf, profile: &str, plan: Plan, against: Vec<PathBuf>) -> Result<()> {
    let reps = plan.reps;
    let bench = Bench::new(&root, profile, plan, "-instructions")?;
    bench.sign_up(INSTRUCTION_DIALOGS * 2)?;
    let mut relays = vec![bench.bin.join("relay")];
    relays.extend(against);
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); relays.len()];
    for rep in 1..=reps {
        for (relay, figures) in relays.iter().zip(&mut figures) {
            cmd::step(&format!(
                "round {rep} of {reps}: instructions per message, {}",
                relay.display()
            ));
            let per_message = bench.instructions_per_message(relay)?;
            println!("{per_message:.0} instructions per message");
            figures.push(per_message);
        }
    }
    let base = median(figures[0].clone());
    let mut rows = Vec::new();
    for (relay, figures) in relays.iter().zip(&figures) {
        let m = median(figures.clone());
        println!(
            "{}: {m:.0} instructions per message (median of {reps}), {:.3}x this build",
            relay.display(),
            m / base
        );
        rows.push(serde_json::json!({
            "relay": relay.display().to_string(),
            "per_message": figures,
            "median": m,
            "ratio_to_this_build": m / base,
        }));
    }
    std::fs::write(
        bench.out.join("instructions.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(())
}

/// `chat_messages_relayed_total` from the relay's `/metrics`.
fn messages_relayed(addr: SocketAddr) -> Result<u64> {
    use std::io::{Read, Write};
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(START_TIMEOUT))?;
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    text.lines()
        .find_map(|line| line.strip_prefix("chat_messages_relayed_total "))
        .context("no chat_messages_relayed_total in /metrics")?
        .trim()
        .parse()
        .context("chat_messages_relayed_total is not a number")
}

/// `--idle`: the idle rounds only, the relay and the floor interleaved,
/// with the medians and their ratio; the raw figures in
/// `target/bench/idle.json`.
fn idle_rounds(root: PathBuf, profile: &str, plan: Plan) -> Result<()> {
    let bench = Bench::new(&root, profile, plan, "-idle")?;
    bench.sign_up(bench.plan.idle_users())?;
    let mut runs = Vec::new();
    let mut raw = Vec::new();
    for rep in 1..=bench.plan.reps {
        cmd::step(&format!("round {rep} of {}: idle sockets", bench.plan.reps));
        for kind in in_turn([Kind::Chat, Kind::Floor], rep) {
            let v = bench.idle(kind)?;
            raw.push(tag("idle", kind, &v));
            runs.push((kind, v));
        }
    }
    let n = bench.plan.idle_checkpoints.last().copied().unwrap_or(0);
    let chat = med(&runs, Kind::Chat, "/per_socket_kib");
    let floor = med(&runs, Kind::Floor, "/per_socket_kib");
    println!(
        "idle, {n} sockets, median of {} rounds: Chat relay {chat:.2} KiB per socket, \
         floor {floor:.2} KiB: {:.3}x the floor (goal: <= 12 KiB and <= 1.2x)",
        bench.plan.reps,
        chat / floor
    );
    std::fs::write(
        bench.out.join("idle.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "chat_per_socket_kib": chat,
            "floor_per_socket_kib": floor,
            "ratio": chat / floor,
            "runs": raw,
        }))?,
    )?;
    Ok(())
}

/// The app's figures: builds the release app and measures it in headless
/// Chromium (`e2e/src/bin/app_bench.rs`), into `target/bench/app.md`.
fn app_figures(out: &Path) -> Result<()> {
    let tools = setup::setup()?;
    crate::test::build_app(&tools)?;
    cmd::step("the app in headless Chromium (app_bench)");
    cmd::run(
        tools
            .command("cargo")
            .current_dir(root())
            .args([
                "run",
                "--quiet",
                "--package",
                "e2e",
                "--bin",
                "app_bench",
                "--",
                "--dist",
            ])
            .arg(root().join("dist"))
            .arg("--out")
            .arg(out.join("app.md"))
            .args(["--runs", "7"]),
    )
}

/// `--report`: writes BENCHMARKS.md again from the figures of the last
/// full run (`target/bench/runs.json`), e.g. once `target/bench/app.md`
/// is there, or after a change to the report itself.
fn report_again() -> Result<()> {
    let path = root().join("target/bench/runs.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}: run `cargo xtask bench` first", path.display()))?;
    let saved: Value = serde_json::from_str(&text)?;
    let took = Duration::from_secs_f64(saved["took_s"].as_f64().unwrap_or(0.0));
    let mut plan = Plan::full();
    let mut r = Results::default();
    let runs = saved.get("runs").unwrap_or(&saved);
    for run in runs.as_array().context("no runs")? {
        if run["scenario"] == "loopback" {
            r.loopback.push(run["figures"].clone());
            r.raw.push(run.clone());
            continue;
        }
        let kind = match run["server"].as_str() {
            Some("chat") => Kind::Chat,
            Some("floor") => Kind::Floor,
            Some("floor-confirming") => Kind::FloorConfirming,
            Some("socketio") => Kind::Socketio,
            other => bail!("unknown server {other:?}"),
        };
        let v = run["figures"].clone();
        let scenario = run["scenario"].as_str().unwrap_or_default();
        match scenario {
            "idle" => r.idle.push((kind, v)),
            "throughput" => r.throughput.push((kind, v)),
            "coalescing" => r.coalescing.push((kind, v)),
            "latency" => r.latency.push((kind, v)),
            "unloaded" => r.unloaded.push((kind, v)),
            "presence" => r.presence.push((kind, v)),
            _ => {
                if let Some(d) = scenario.strip_prefix("throughput-") {
                    r.growth_throughput.push((kind, d.parse()?, v));
                } else if let Some(load) = scenario.strip_prefix("latency-") {
                    r.growth_latency.push((kind, load.parse()?, v));
                } else {
                    bail!("unknown scenario {scenario:?}");
                }
            }
        }
        r.raw.push(run.clone());
    }
    plan.reps = r
        .throughput
        .iter()
        .filter(|(k, _)| *k == Kind::Chat)
        .count();
    r.half_rate = med(&r.latency, Kind::Chat, "/offered_per_s");
    r.date = saved["date"]
        .as_str()
        .unwrap_or("an earlier day")
        .to_string();
    let load = |i: usize| saved["load_average"][i].as_str().unwrap_or("?").to_string();
    r.load_average = (load(0), load(1));
    let report = report(&plan, &r, took)?;
    let out = root().join("BENCHMARKS.md");
    std::fs::write(&out, report)?;
    cmd::step(&format!("wrote {} from {}", out.display(), path.display()));
    Ok(())
}

/// Every run's figures, by scenario and server.
#[derive(Debug, Default)]
struct Results {
    idle: Vec<(Kind, Value)>,
    throughput: Vec<(Kind, Value)>,
    latency: Vec<(Kind, Value)>,
    unloaded: Vec<(Kind, Value)>,
    /// No server: the loopback round trip between two blocked threads.
    loopback: Vec<Value>,
    presence: Vec<(Kind, Value)>,
    growth_throughput: Vec<(Kind, usize, Value)>,
    growth_latency: Vec<(Kind, f64, Value)>,
    /// When the runs were made (UTC day).
    date: String,
    /// The machine's 1-minute load average before and after the runs:
    /// other work on a shared machine shows here.
    load_average: (String, String),
    /// Dialogs with several messages in flight, the server's writes counted.
    coalescing: Vec<(Kind, Value)>,
    /// The rate of the latency runs: half of the relay's median maximum.
    half_rate: f64,
    raw: Vec<Value>,
}

impl Results {
    /// The smoke check of `--quick`: messages flowed through every server.
    fn check_flow(&self) -> Result<()> {
        for kind in THROUGHPUT_KINDS {
            let delivered: f64 = self
                .throughput
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, v)| num(v, "/delivered"))
                .sum();
            if delivered < 100.0 {
                bail!(
                    "only {delivered} messages flowed through the {}",
                    kind.title()
                );
            }
        }
        Ok(())
    }
}

fn num(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The median over `runs` (of one server) of the figure at `pointer`.
fn median_of(runs: &[Value], pointer: &str) -> f64 {
    median(runs.iter().map(|v| num(v, pointer)).collect())
}

/// The figure at `pointer` of each run of `kind`, in the order they ran.
fn figures(runs: &[(Kind, Value)], kind: Kind, pointer: &str) -> Vec<f64> {
    runs.iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, v)| num(v, pointer))
        .collect()
}

/// The median over the runs of `kind` of the figure at `pointer`.
fn med(runs: &[(Kind, Value)], kind: Kind, pointer: &str) -> f64 {
    median(figures(runs, kind, pointer))
}

impl Bench {
    /// The binaries of `profile`, and the benchmark's folder with its
    /// accounts and database (`suffix` keeps one kind of run's apart).
    fn new(root: &Path, profile: &str, plan: Plan, suffix: &str) -> Result<Bench> {
        let out = root.join("target/bench");
        std::fs::create_dir_all(&out)?;
        Ok(Bench {
            bin: root.join("target").join(profile),
            accounts: out.join(format!("accounts{suffix}.txt")),
            db: out.join(format!("chat-bench{suffix}.db")),
            out,
            plan,
        })
    }

    /// A fresh database with `count` accounts, signed up on the relay;
    /// their names and cookies in `accounts`.
    fn sign_up(&self, count: usize) -> Result<()> {
        cmd::step(&format!("signing up {count} accounts on the relay"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db.display()));
        }
        let relay = self.start(Kind::Chat)?;
        self.load(&[
            "accounts",
            "--server",
            &relay.addr.to_string(),
            "--count",
            &count.to_string(),
            "--out",
            &self.accounts.to_string_lossy(),
        ])?;
        relay.stop()
    }

    fn run(&self) -> Result<Results> {
        let plan = &self.plan;
        let mut results = Results {
            date: output_line("date", &["-u", "+%Y-%m-%d"]).unwrap_or_default(),
            load_average: (load_average(), String::new()),
            ..Results::default()
        };
        self.sign_up(plan.accounts())?;

        for rep in 1..=plan.reps {
            cmd::step(&format!("round {rep} of {}: idle sockets", plan.reps));
            for kind in in_turn(KINDS, rep) {
                let v = self.idle(kind)?;
                results.raw.push(tag("idle", kind, &v));
                results.idle.push((kind, v));
            }
            cmd::step(&format!(
                "round {rep} of {}: throughput, {} dialogs",
                plan.reps, plan.dialogs
            ));
            for kind in in_turn(THROUGHPUT_KINDS, rep) {
                let v = self.dialogs(
                    kind,
                    plan.dialogs,
                    &["--window", &WINDOW.to_string()],
                    false,
                )?;
                results.raw.push(tag("throughput", kind, &v));
                results.throughput.push((kind, v));
            }
            cmd::step(&format!(
                "round {rep} of {}: write calls, {} dialogs with {BURST_WINDOW} in flight per side",
                plan.reps, plan.dialogs
            ));
            for kind in in_turn(KINDS, rep) {
                let window = BURST_WINDOW.to_string();
                let v = self.dialogs(kind, plan.dialogs, &["--window", &window], true)?;
                results.raw.push(tag("coalescing", kind, &v));
                results.coalescing.push((kind, v));
            }
        }
        let max = med(&results.throughput, Kind::Chat, "/delivered_per_s");
        if max.is_nan() || max <= 0.0 {
            bail!("the relay delivered nothing in the throughput runs");
        }
        results.half_rate = (max * 0.5).round();
        for rep in 1..=plan.reps {
            cmd::step(&format!(
                "round {rep} of {}: latency at {:.0} messages/s (half the relay's maximum), and unloaded",
                plan.reps, results.half_rate
            ));
            for kind in in_turn(KINDS, rep) {
                let rate = results.half_rate.to_string();
                let v = self.dialogs(kind, plan.dialogs, &["--rate", &rate], false)?;
                results.raw.push(tag("latency", kind, &v));
                results.latency.push((kind, v));
            }
            for kind in in_turn(KINDS, rep) {
                let v = self.dialogs(kind, 1, &["--rate", &UNLOADED_RATE.to_string()], false)?;
                results.raw.push(tag("unloaded", kind, &v));
                results.unloaded.push((kind, v));
            }
            let count = if plan.quick { "100" } else { "1000" };
            let rate = UNLOADED_RATE.to_string();
            let v = self.load(&["loopback", "--count", count, "--rate", &rate])?;
            results
                .raw
                .push(serde_json::json!({ "scenario": "loopback", "figures": v }));
            results.loopback.push(v);
        }
        for rep in 1..=plan.reps {
            cmd::step(&format!(
                "round {rep} of {}: presence, {} online, {} joining within a second",
                plan.reps, plan.observers, plan.joiners
            ));
            for kind in in_turn([Kind::Chat, Kind::Floor], rep) {
                let server = self.start(kind)?;
                let v = self.load(&[
                    "presence",
                    "--target",
                    kind.target(),
                    "--server",
                    &server.addr.to_string(),
                    "--observers",
                    &plan.observers.to_string(),
                    "--joiners",
                    &plan.joiners.to_string(),
                    "--accounts",
                    &self.accounts.to_string_lossy(),
                ])?;
                server.stop()?;
                results.raw.push(tag("presence", kind, &v));
                results.presence.push((kind, v));
            }
        }
        if !plan.growth_dialogs.is_empty() || !plan.growth_loads.is_empty() {
            cmd::step("growth: throughput by dialogs, latency by load");
        }
        for &dialogs in &plan.growth_dialogs {
            for kind in KINDS {
                let v = if dialogs == plan.dialogs {
                    continue;
                } else {
                    self.dialogs(kind, dialogs, &["--window", &WINDOW.to_string()], false)?
                };
                results
                    .raw
                    .push(tag(&format!("throughput-{dialogs}"), kind, &v));
                results.growth_throughput.push((kind, dialogs, v));
            }
        }
        for &load in &plan.growth_loads {
            for kind in KINDS {
                let rate = (max * load).round().to_string();
                let v = self.dialogs(kind, plan.dialogs, &["--rate", &rate], false)?;
                results.raw.push(tag(&format!("latency-{load}"), kind, &v));
                results.growth_latency.push((kind, load, v));
            }
        }
        results.load_average.1 = load_average();
        Ok(results)
    }

    fn idle(&self, kind: Kind) -> Result<Value> {
        let server = self.start(kind)?;
        let checkpoints: Vec<String> = self
            .plan
            .idle_checkpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut args = vec![
            "idle".to_string(),
            "--target".into(),
            kind.target().into(),
            "--server".into(),
            server.addr.to_string(),
            "--pid".into(),
            server.pid().to_string(),
            "--checkpoints".into(),
            checkpoints.join(","),
            "--settle".into(),
            self.plan.settle.into(),
        ];
        if kind == Kind::Chat {
            args.extend([
                "--accounts".into(),
                self.accounts.to_string_lossy().into_owned(),
                "--users".into(),
                self.plan.idle_users().to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.load(&args)?;
        server.stop()?;
        Ok(v)
    }

    fn dialogs(
        &self,
        kind: Kind,
        dialogs: usize,
        pace: &[&str],
        count_writes: bool,
    ) -> Result<Value> {
        let server = self.start(kind)?;
        let (addr, pid, n) = (
            server.addr.to_string(),
            server.pid().to_string(),
            dialogs.to_string(),
        );
        let accounts = self.accounts.to_string_lossy();
        let mut args = vec![
            "dialogs",
            "--target",
            kind.target(),
            "--server",
            &addr,
            "--pid",
            &pid,
            "--dialogs",
            &n,
            "--warmup",
            self.plan.warmup,
            "--measure",
            self.plan.measure,
        ];
        args.extend_from_slice(pace);
        if kind == Kind::Chat {
            args.extend(["--accounts", &accounts]);
        }
        if count_writes {
            args.push("--count-writes");
        }
        let v = self.load(&args)?;
        server.stop()?;
        Ok(v)
    }

    /// Runs the load generator; its figures.
    fn load(&self, args: &[&str]) -> Result<Value> {
        let mut command = Command::new(self.bin.join("load"));
        command.args(args).env("RUST_BACKTRACE", "0");
        let out = cmd::run_tee(&mut command).context("a benchmark run failed")?;
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| format!("the load generator said: {out}"))
    }

    /// One callgrind count: `relay` under callgrind with instrumentation
    /// off, dialogs at one message in flight per side, then instructions
    /// counted over [`INSTRUCTION_WINDOW`] once the flow is steady, and
    /// divided by the messages the relay stamped in it.
    fn instructions_per_message(&self, relay: &Path) -> Result<f64> {
        let profile = self.out.join("callgrind.out");
        let dump = PathBuf::from(format!("{}.1", profile.display()));
        let _ = std::fs::remove_file(&profile);
        let _ = std::fs::remove_file(&dump);
        let mut valgrind = Command::new("valgrind");
        valgrind
            .args(["--tool=callgrind", "--instr-atstart=no"])
            .arg(format!("--callgrind-out-file={}", profile.display()))
            .arg(relay)
            // The relay sets these itself by starting itself again, which
            // would leave valgrind behind.
            .env("MIMALLOC_PURGE_DELAY", "0")
            .env("MIMALLOC_ALLOW_THP", "0");
        let (child, addr) = self
            .spawn_relay(valgrind, "callgrind.log", START_TIMEOUT * 3)
            .context("the relay under valgrind (is valgrind installed?)")?;
        let server = Server {
            kind: Kind::Chat,
            child,
            addr,
        };
        let pid = server.pid().to_string();
        let mut load = Command::new(self.bin.join("load"))
            .args(["dialogs", "--target", "chat", "--server", &addr.to_string()])
            .args([
                "--pid",
                &pid,
                "--window",
                "1",
                "--warmup",
                "1s",
                "--measure",
                "600s",
            ])
            .args(["--dialogs", &INSTRUCTION_DIALOGS.to_string(), "--accounts"])
            .arg(&self.accounts)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the load generator")?;
        let counted = (|| -> Result<(u64, u64)> {
            let deadline = Instant::now() + START_TIMEOUT * 3;
            while messages_relayed(addr)? < INSTRUCTION_WARMUP_MESSAGES {
                if Instant::now() > deadline || load.try_wait()?.is_some() {
                    bail!("no steady flow of messages through the relay under valgrind");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let control = |args: &[&str]| {
                cmd::run(
                    Command::new("callgrind_control")
                        .args(args)
                        .arg(&pid)
                        .stdout(Stdio::null()),
                )
            };
            let before = messages_relayed(addr)?;
            control(&["--instr=on"])?;
            std::thread::sleep(INSTRUCTION_WINDOW);
            control(&["--instr=off"])?;
            let after = messages_relayed(addr)?;
            control(&["--dump"])?;
            Ok((before, after))
        })();
        let _ = load.kill();
        let _ = load.wait();
        server.stop()?;
        let (before, after) = counted?;
        // The dump holds the counted window; the profile written at exit,
        // what came after it.
        let dumped = std::fs::read_to_string(&dump).context("reading callgrind's dump")?;
        let total: f64 = dumped
            .lines()
            .find_map(|line| line.strip_prefix("totals: "))
            .context("no totals in callgrind's dump")?
            .trim()
            .parse()
            .context("callgrind's totals are not a number")?;
        let messages = after.saturating_sub(before);
        if messages == 0 {
            bail!("no messages were stamped while instructions were counted");
        }
        Ok(total / messages as f64)
    }

    /// Starts `command` (the relay, or a wrapper given the relay last) with
    /// the relay's benchmark flags on a free port, its output in `log`, and
    /// waits up to `patience` for it to listen.
    fn spawn_relay(
        &self,
        mut command: Command,
        log: &str,
        patience: Duration,
    ) -> Result<(Child, SocketAddr)> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = self.out.join(log);
        let file = std::fs::File::create(&log)?;
        let child = command
            .args(["--listen", &addr.to_string(), "--static-dir"])
            .arg(self.out.join("no-app"))
            .arg("--db")
            .arg(&self.db)
            .args(RELAY_FLAGS)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting the relay")?;
        let deadline = Instant::now() + patience;
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("the relay did not start: see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((child, addr))
    }

    fn start(&self, kind: Kind) -> Result<Server> {
        let (child, addr) = match kind {
            Kind::Chat => self.spawn_relay(
                Command::new(self.bin.join("relay")),
                &format!("{}.log", kind.name()),
                START_TIMEOUT,
            )?,
            Kind::Floor | Kind::FloorConfirming | Kind::Socketio => {
                let log = std::fs::File::create(self.out.join(format!("{}.log", kind.name())))?;
                let mut command = if kind == Kind::Socketio {
                    let mut c = Command::new("node");
                    c.current_dir(setup::socketio_dir())
                        .args(["server.js", "0"]);
                    c
                } else {
                    let mut c = Command::new(self.bin.join("floor"));
                    c.args(["--listen", "127.0.0.1:0"]);
                    if kind == Kind::FloorConfirming {
                        c.arg("--confirm");
                    }
                    c
                };
                let mut child = command
                    .stdout(Stdio::piped())
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting the {}", kind.title()))?;
                let addr = listening_on(&mut child)
                    .with_context(|| format!("the {} did not start", kind.title()))?;
                (child, addr)
            }
        };
        Ok(Server { kind, child, addr })
    }
}

/// The servers of round `rep` (from 1) in the order they run: each round
/// starts one server further along than the round before, so that no
/// server always runs first, just after the last scenario's servers have
/// stopped, or always last.
fn in_turn<const N: usize>(kinds: [Kind; N], rep: usize) -> impl Iterator<Item = Kind> {
    (0..N).map(move |i| kinds[(i + rep.saturating_sub(1)) % N])
}

/// Reads `listening on ADDR` from a server's first line of output.
fn listening_on(child: &mut Child) -> Result<SocketAddr> {
    let stdout = child.stdout.take().context("no output")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    line.trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .parse()
        .context("not an address")
}

fn tag(scenario: &str, kind: Kind, v: &Value) -> Value {
    serde_json::json!({ "scenario": scenario, "server": kind.name(), "figures": v })
}

// ---------------------------------------------------------------------------
// The report.

/// One goal row.
struct Row {
    what: String,
    chat: String,
    floor: String,
    peer: String,
    goal: String,
    ratio: String,
    met: Option<bool>,
}

/// `v` with its unit: 3 significant digits below 100, whole numbers with
/// thousands separators above; units that are symbols (`/s`, `×`) stick.
fn fmt(v: f64, unit: &str) -> String {
    if v.is_nan() || v.is_infinite() {
        return "–".into();
    }
    let whole = v.fract() == 0.0;
    let digits = if v.abs() >= 100.0 || whole {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    let number = format!("{v:.digits$}");
    // Thousands separators for large whole numbers.
    let number = if digits == 0 && v.abs() >= 1_000.0 {
        let raw = number.trim_start_matches('-');
        let mut grouped = String::new();
        for (i, c) in raw.chars().enumerate() {
            if i > 0 && (raw.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else {
        number
    };
    if unit.is_empty() {
        number
    } else if unit.starts_with('/') || unit == "×" {
        format!("{number}{unit}")
    } else {
        format!("{number} {unit}")
    }
}

fn met(ok: bool) -> Option<bool> {
    Some(ok)
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let files = output_line("sh", &["-c", "ulimit -n"]).unwrap_or_default();
    vec![
        ("CPU".into(), format!("{model}, {cores} cores")),
        ("memory".into(), memory),
        (
            "kernel".into(),
            output_line("uname", &["-sr"]).unwrap_or_else(|| "unknown".into()),
        ),
        ("open files per process".into(), files),
        (
            "rustc".into(),
            output_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        ),
        (
            "node".into(),
            output_line("node", &["--version"]).unwrap_or_else(|| "unknown".into()),
        ),
        (
            "socket.io".into(),
            setup::installed_socketio().unwrap_or_else(|| "unknown".into()),
        ),
    ]
}

fn report(plan: &Plan, r: &Results, took: Duration) -> Result<String> {
    use Kind::{Chat, Floor, Socketio};
    let mut rows = Vec::new();
    let goals = !plan.quick;
    let judge = |ok: bool| if goals { met(ok) } else { None };

    // Idle.
    let n = plan.idle_checkpoints.last().copied().unwrap_or(0);
    let rate = |k| med(&r.idle, k, "/connect_rate");
    rows.push(Row {
        what: format!("idle: connect rate, {} sockets", fmt(n as f64, "")),
        chat: fmt(rate(Chat), "/s"),
        floor: fmt(rate(Floor), "/s"),
        peer: fmt(rate(Socketio), "/s"),
        goal: "≥ 2,000/s".into(),
        ratio: format!("{} floor", fmt(rate(Chat) / rate(Floor), "×")),
        met: judge(rate(Chat) >= 2_000.0),
    });
    let mem = |k| med(&r.idle, k, "/per_socket_kib");
    let mem_ratio = mem(Chat) / mem(Floor);
    rows.push(Row {
        what: format!("idle: RSS per socket, {} sockets", fmt(n as f64, "")),
        chat: fmt(mem(Chat), "KiB"),
        floor: fmt(mem(Floor), "KiB"),
        peer: fmt(mem(Socketio), "KiB"),
        goal: "≤ 12 KiB and ≤ 1.2× floor".into(),
        ratio: format!("{} floor", fmt(mem_ratio, "×")),
        met: judge(mem(Chat) <= 12.0 && mem_ratio <= 1.2),
    });
    // Throughput.
    let tput = |k| med(&r.throughput, k, "/delivered_per_s");
    rows.push(Row {
        what: format!(
            "throughput: {} dialogs, 100-byte messages, delivered/s",
            fmt(plan.dialogs as f64, "")
        ),
        chat: fmt(tput(Chat), "/s"),
        floor: fmt(tput(Floor), "/s"),
        peer: fmt(tput(Socketio), "/s"),
        goal: "≥ 0.8× floor, ≥ 2× socket.io".into(),
        ratio: format!(
            "{} floor, {} socket.io",
            fmt(tput(Chat) / tput(Floor), "×"),
            fmt(tput(Chat) / tput(Socketio), "×")
        ),
        met: judge(tput(Chat) >= 0.8 * tput(Floor) && tput(Chat) >= 2.0 * tput(Socketio)),
    });
    // Latency at half the relay's maximum.
    let lat = |k, p: &str| med(&r.latency, k, &format!("/latency/{p}"));
    let latency_row = |what: String, p: &str, goal_ms: f64| Row {
        what,
        chat: fmt(lat(Chat, p), "ms"),
        floor: fmt(lat(Floor, p), "ms"),
        peer: fmt(lat(Socketio, p), "ms"),
        goal: format!("≤ {goal_ms} ms"),
        ratio: format!("{} floor", fmt(lat(Chat, p) / lat(Floor, p), "×")),
        met: judge(lat(Chat, p) <= goal_ms),
    };
    rows.push(latency_row(
        format!("latency at 50 % load ({} msg/s), p99", fmt(r.half_rate, "")),
        "p99_ms",
        5.0,
    ));
    rows.push(latency_row(
        "latency at 50 % load, p99.9".into(),
        "p999_ms",
        20.0,
    ));
    let unl = |k| med(&r.unloaded, k, "/latency_from_actual_send/p50_ms") * 1000.0;
    rows.push(Row {
        what: format!("latency unloaded (1 dialog, {UNLOADED_RATE} msg/s), p50"),
        chat: fmt(unl(Chat), "µs"),
        floor: fmt(unl(Floor), "µs"),
        peer: fmt(unl(Socketio), "µs"),
        goal: "≤ 100 µs".into(),
        ratio: format!("{} floor", fmt(unl(Chat) / unl(Floor), "×")),
        met: judge(unl(Chat) <= 100.0),
    });
    // Presence.
    let pres = |k, p: &str| med(&r.presence, k, p);
    let seen = |k| {
        let complete = every_join_seen(&r.presence, k);
        let p99 = fmt(pres(k, "/latency/p99_ms"), "ms");
        if complete {
            p99
        } else {
            format!("{p99} (some joins never seen)")
        }
    };
    rows.push(Row {
        what: format!(
            "presence: {} online, {} join in 1 s; join seen, p99",
            fmt(plan.observers as f64, ""),
            fmt(plan.joiners as f64, "")
        ),
        chat: seen(Chat),
        floor: seen(Floor),
        peer: "n/a".into(),
        goal: format!(
            "≤ {} ms (batch + 100 ms), all seen",
            PRESENCE_BATCH_MS + 100.0
        ),
        ratio: format!(
            "{} floor",
            fmt(
                pres(Chat, "/latency/p99_ms") / pres(Floor, "/latency/p99_ms"),
                "×"
            )
        ),
        met: judge(
            every_join_seen(&r.presence, Chat)
                && pres(Chat, "/latency/p99_ms") <= PRESENCE_BATCH_MS + 100.0,
        ),
    });
    rows.push(Row {
        what: "presence: frames per client per second (most in any 1 s)".into(),
        chat: fmt(pres(Chat, "/max_presence_frames_per_s"), ""),
        floor: fmt(pres(Floor, "/max_presence_frames_per_s"), ""),
        peer: "n/a".into(),
        goal: "≤ 10".into(),
        ratio: "–".into(),
        met: judge(pres(Chat, "/max_presence_frames_per_s") <= 10.0),
    });
    // Write coalescing.
    let writes = |k| med(&r.coalescing, k, "/writes_per_delivered");
    let burst = |k| med(&r.coalescing, k, "/delivered_per_s");
    rows.push(Row {
        what: format!(
            "write syscalls per delivered message ({BURST_WINDOW} in flight per side; \
             delivered/s: Chat {}, floor {}, socket.io {})",
            fmt(burst(Chat), ""),
            fmt(burst(Floor), ""),
            fmt(burst(Socketio), "")
        ),
        chat: fmt(writes(Chat), ""),
        floor: fmt(writes(Floor), ""),
        peer: fmt(writes(Socketio), ""),
        goal: "≤ 0.5".into(),
        ratio: format!("{} floor", fmt(writes(Chat) / writes(Floor), "×")),
        met: judge(writes(Chat) <= 0.5),
    });

    let mut md = String::new();
    if plan.quick {
        writeln!(md, "# Benchmarks (quick smoke run: not figures)\n")?;
        writeln!(
            md,
            "Produced by `cargo xtask bench --quick`: a debug build, tiny sizes, one round. \
             It shows that every server starts and messages flow; no goal is judged.\n"
        )?;
    } else {
        writeln!(md, "# Benchmarks\n")?;
        writeln!(
            md,
            "Produced by `cargo xtask bench` on {} in {:.0} minutes. Every figure is the median of \
             {} interleaved rounds (relay, floor, socket.io, each round starting one server further along) unless marked otherwise. \
             This machine is shared and noisy (20–50 % from run to run): the ratios against the \
             baselines measured in the same invocation matter more than the bare numbers. \
             Rerun it after any change to the relay; the raw figures of every run are in \
             `target/bench/runs.json`.\n",
            r.date,
            took.as_secs_f64() / 60.0,
            plan.reps
        )?;
    }
    writeln!(md, "## Machine\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    for (k, v) in machine() {
        writeln!(md, "| {k} | {v} |")?;
    }
    writeln!(
        md,
        "| load average (1 min) before / after the runs | {} / {} |",
        r.load_average.0, r.load_average.1
    )?;
    writeln!(md, "\nClient and servers share the machine: the load generator's CPU is taken from the server's.\n")?;

    writeln!(md, "## Goals\n")?;
    writeln!(
        md,
        "| what | Chat relay | floor | socket.io | goal | ratio | met |\n|---|---|---|---|---|---|---|"
    )?;
    for row in &rows {
        let mark = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.what, row.chat, row.floor, row.peer, row.goal, row.ratio, mark
        )?;
    }

    writeln!(md, "\n{}", observations(plan, r)?)?;

    writeln!(md, "## Growth\n")?;
    writeln!(
        md,
        "Resident memory (RSS) with idle sockets (median of the idle rounds):\n"
    )?;
    writeln!(
        md,
        "| sockets | Chat relay | floor | socket.io |\n|---|---|---|---|"
    )?;
    for (i, &n) in plan.idle_checkpoints.iter().enumerate() {
        let cell = |k| {
            let rss = med(&r.idle, k, &format!("/checkpoints/{i}/rss_kib")) / 1024.0;
            let per = med(&r.idle, k, &format!("/checkpoints/{i}/per_socket_kib"));
            format!("{} ({} per socket)", fmt(rss, "MiB"), fmt(per, "KiB"))
        };
        writeln!(
            md,
            "| {} | {} | {} | {} |",
            fmt(n as f64, ""),
            cell(Chat),
            cell(Floor),
            cell(Socketio)
        )?;
    }
    writeln!(md, "\nThroughput by number of dialogs (delivered messages/s; {} dialogs: median of the rounds, the others one run each):\n", plan.dialogs)?;
    writeln!(
        md,
        "| dialogs | Chat relay | floor | socket.io | Chat / floor |\n|---|---|---|---|---|"
    )?;
    let mut sizes: Vec<usize> = plan.growth_dialogs.clone();
    if !sizes.contains(&plan.dialogs) {
        sizes.push(plan.dialogs);
    }
    sizes.sort_unstable();
    for d in sizes {
        let cell = |k: Kind| {
            if d == plan.dialogs {
                tput(k)
            } else {
                median(
                    r.growth_throughput
                        .iter()
                        .filter(|(kk, dd, _)| *kk == k && *dd == d)
                        .map(|(_, _, v)| num(v, "/delivered_per_s"))
                        .collect(),
                )
            }
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            fmt(d as f64, ""),
            fmt(cell(Chat), "/s"),
            fmt(cell(Floor), "/s"),
            fmt(cell(Socketio), "/s"),
            fmt(cell(Chat) / cell(Floor), "×")
        )?;
    }
    writeln!(md, "\nLatency by load ({} dialogs; load is a share of the relay's median maximum, the same offered rate for every server; p50 / p99 / p99.9 from each message's intended send time; 50 %: median of the rounds, the others one run each):\n", plan.dialogs)?;
    writeln!(
        md,
        "| load | offered | Chat relay | floor | socket.io |\n|---|---|---|---|---|"
    )?;
    let mut loads: Vec<f64> = plan.growth_loads.clone();
    loads.push(0.5);
    loads.sort_by(f64::total_cmp);
    for load in loads {
        let cell = |k: Kind| {
            let pick = |p: &str| {
                if load == 0.5 {
                    lat(k, p)
                } else {
                    median(
                        r.growth_latency
                            .iter()
                            .filter(|(kk, l, _)| *kk == k && *l == load)
                            .map(|(_, _, v)| num(v, &format!("/latency/{p}")))
                            .collect(),
                    )
                }
            };
            let dropped: f64 = if load == 0.5 {
                r.latency
                    .iter()
                    .filter(|(kk, _)| *kk == k)
                    .map(|(_, v)| num(v, "/sockets_dropped"))
                    .filter(|d| !d.is_nan())
                    .sum()
            } else {
                r.growth_latency
                    .iter()
                    .filter(|(kk, l, _)| *kk == k && *l == load)
                    .map(|(_, _, v)| num(v, "/sockets_dropped"))
                    .filter(|d| !d.is_nan())
                    .sum()
            };
            let dropped = if dropped > 0.0 {
                format!(" ({} sockets dropped)", fmt(dropped, ""))
            } else {
                String::new()
            };
            format!(
                "{} / {} / {} ms{dropped}",
                fmt(pick("p50_ms"), ""),
                fmt(pick("p99_ms"), ""),
                fmt(pick("p999_ms"), "")
            )
        };
        let offered = tput(Chat) * load;
        writeln!(
            md,
            "| {:.0} % | {} | {} | {} | {} |",
            load * 100.0,
            fmt(offered, "msg/s"),
            cell(Chat),
            cell(Floor),
            cell(Socketio)
        )?;
    }

    writeln!(md, "\n## How it is measured\n")?;
    writeln!(md, "{}", METHOD.trim())?;
    writeln!(
        md,
        "\nThe relay runs with `{}` (and `RUST_LOG=warn`).",
        RELAY_FLAGS.join(" ")
    )?;

    // The app's figures (release .wasm and JS glue gzipped, first render
    // of the sign-in page, appending to a conversation of 1,000 messages):
    // `app_figures` writes `target/bench/app.md` in a full run.
    match std::fs::read_to_string(root().join("target/bench/app.md")) {
        // It brings its own "## App" heading.
        Ok(app) => writeln!(md, "\n{}", app.trim())?,
        Err(_) => writeln!(
            md,
            "\n## App\n\nNot measured by this run: the app's figures (wasm size, first render, \
             appending to 1,000 messages) come from a separate command that writes \
             `target/bench/app.md`, included here when present."
        )?,
    }
    Ok(md)
}

/// Whether, in every presence round of `kind`, every online client
/// learned of every join.
fn every_join_seen(rounds: &[(Kind, Value)], kind: Kind) -> bool {
    rounds
        .iter()
        .filter(|(k, _)| *k == kind)
        .all(|(_, v)| num(v, "/learned") == num(v, "/expected"))
}

/// What the figures above do not show by themselves: runs in which the
/// server dropped sockets, and what the presence burst cost the newcomers.
fn observations(plan: &Plan, r: &Results) -> Result<String> {
    let mut notes = String::new();
    let runs: [(&str, &[(Kind, Value)]); 4] = [
        ("throughput", &r.throughput),
        ("write-call runs", &r.coalescing),
        ("latency at 50 % load", &r.latency),
        ("unloaded latency", &r.unloaded),
    ];
    for (what, runs) in runs {
        for kind in KINDS {
            let hit: Vec<f64> = runs
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, v)| num(v, "/sockets_dropped"))
                .filter(|d| *d > 0.0)
                .collect();
            if !hit.is_empty() {
                writeln!(
                    notes,
                    "- {what}: in {} of {} rounds the {} dropped sockets ({} in all) as slow \
                     readers: the offered load was more than the machine carried then.",
                    hit.len(),
                    plan.reps,
                    kind.title(),
                    fmt(hit.iter().sum(), "")
                )?;
            }
        }
    }
    let cpu = |k| {
        median(
            r.latency
                .iter()
                .filter(|(kk, _)| *kk == k)
                .map(|(_, v)| num(v, "/server_cpu_s") / num(v, "/delivered") * 1e6)
                .collect(),
        )
    };
    if !r.latency.is_empty() {
        writeln!(
            notes,
            "- server CPU per delivered message at 50 % load (user + system time over the \
             measured window): Chat relay {}, floor {}, socket.io {} ({} floor).",
            fmt(cpu(Kind::Chat), "µs"),
            fmt(cpu(Kind::Floor), "µs"),
            fmt(cpu(Kind::Socketio), "µs"),
            fmt(cpu(Kind::Chat) / cpu(Kind::Floor), "×")
        )?;
    }
    let tput = |k| med(&r.throughput, k, "/delivered_per_s");
    let confirming = tput(Kind::FloorConfirming);
    if confirming.is_finite() {
        writeln!(
            notes,
            "- throughput and confirmations: the confirming floor (each message also sent back \
             to its sender, 3 frames per message as the relay sends) delivered {}, {} the \
             floor: what a bare forwarder that confirms every message reaches on this machine, \
             with client and server sharing it. The Chat relay delivered {} of that.",
            fmt(confirming, "/s"),
            fmt(confirming / tput(Kind::Floor), "×"),
            fmt(tput(Kind::Chat) / confirming, "×")
        )?;
    }
    // The goal is judged on the medians; the rounds show how far apart the
    // paired runs of one round were, and in which direction.
    let per_round = |k| figures(&r.throughput, k, "/delivered_per_s");
    let (chat, floor, peer) = (
        per_round(Kind::Chat),
        per_round(Kind::Floor),
        per_round(Kind::Socketio),
    );
    if chat.len() > 1 && chat.len() == floor.len() && chat.len() == peer.len() {
        let list = |values: &[f64], unit: &str| {
            values
                .iter()
                .map(|v| fmt(*v, unit))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let ratios =
            |base: &[f64]| -> Vec<f64> { chat.iter().zip(base).map(|(c, b)| c / b).collect() };
        writeln!(
            notes,
            "- throughput round by round (each server started afresh; each round starts one \
             server further along): Chat relay {}; floor {}; socket.io {}. The relay against the floor of \
             the same round: {} (median {}); against socket.io: {} (median {}).",
            list(&chat, "/s"),
            list(&floor, "/s"),
            list(&peer, "/s"),
            list(&ratios(&floor), "×"),
            fmt(median(ratios(&floor)), "×"),
            list(&ratios(&peer), "×"),
            fmt(median(ratios(&peer)), "×"),
        )?;
    }
    let round_trip = median_of(&r.loopback, "/round_trip/p50_ms") * 1000.0;
    if round_trip.is_finite() {
        let unl = |k| med(&r.unloaded, k, "/latency_from_actual_send/p50_ms") * 1000.0;
        writeln!(
            notes,
            "- unloaded latency and this machine: two threads passing a 100-byte message back \
             and forth over loopback TCP, each blocked in `recv` between messages ({UNLOADED_RATE} \
             a second; no runtime, no WebSocket, no relay: `load loopback`), took p50 {} for the \
             round trip. A relayed message makes the same two hops (to the server, on to the \
             recipient): the floor took {} that, the Chat relay {}.",
            fmt(round_trip, "µs"),
            fmt(unl(Kind::Floor) / round_trip, "×"),
            fmt(unl(Kind::Chat) / round_trip, "×"),
        )?;
    }
    for kind in [Kind::Chat, Kind::Floor] {
        let rounds = r.presence.iter().filter(|(k, _)| *k == kind).count();
        if rounds == 0 {
            continue;
        }
        let pres = |p: &str| med(&r.presence, kind, p);
        writeln!(
            notes,
            "- presence, {} ({}): each newcomer's `welcome` (every \
             online user) was {} KiB; from its `hello` to its `welcome` took p50 {} / p99 {} \
             ms; the newcomers' hellos spread over {} s. {}",
            kind.title(),
            if rounds == 1 {
                "1 round".to_string()
            } else {
                format!("medians of {rounds} rounds")
            },
            fmt(pres("/joiner_welcome_bytes_median") / 1024.0, ""),
            fmt(pres("/joiner_welcome/p50_ms"), ""),
            fmt(pres("/joiner_welcome/p99_ms"), ""),
            fmt(pres("/join_window_s"), ""),
            if every_join_seen(&r.presence, kind) {
                "In every round every online client saw every join."
            } else {
                "In some round some online client missed a join (runs.json has which)."
            }
        )?;
    }
    for kind in KINDS {
        let errors: Vec<&str> = r
            .coalescing
            .iter()
            .filter(|(k, _)| *k == kind)
            .filter_map(|(_, v)| v.pointer("/writes_error").and_then(Value::as_str))
            .collect();
        if let Some(e) = errors.first() {
            writeln!(
                notes,
                "- write calls of the {} not counted: {e}",
                kind.title()
            )?;
        }
    }
    Ok(if notes.is_empty() {
        String::new()
    } else {
        format!("Observations:\n\n{notes}")
    })
}

const METHOD: &str = r#"
- **Servers.** Each run starts its server afresh, on a free port: the Chat relay
  (release build, accounts in SQLite), the **floor** (`bench/src/floor.rs`: a
  warp/tokio forwarder between paired sockets, no sign-in, no presence, no JSON,
  its own upgrade, 4 KiB tungstenite buffers, a bounded queue per socket,
  feed-then-flush writes through tungstenite, mimalloc; the relay instead writes
  data frames itself, from shared bytes) and a **socket.io**
  relay (`bench/peers/socketio/server.js`: rooms of two, each message emitted to
  the other side; WebSocket transport only, no compression).
- **Load generator** (`bench/src/bin/load.rs`, tokio-tungstenite + hdrhistogram),
  a separate process on the same machine. Its sockets are bound to 127.0.0.1–8
  before connecting. Chat clients sign in with real accounts (signed up once per
  invocation, argon2id), say `hello`, open dialogs with `open` and post with
  `send`; socket.io clients speak Engine.IO v4 over a plain WebSocket.
- **Idle.** Sockets are connected 128 at a time up to each checkpoint; the server's
  RSS (`/proc/PID/status`) is read 2 s after each. Per-socket memory is the growth
  over the server's RSS before the first socket, divided by the sockets. Chat's
  sockets are tabs of signed-in users, 30 per user, each greeted with `welcome`
  (so the online list and presence state are included); the connect rate counts
  until every `welcome` (floor: upgrade; socket.io: `join` answered).
- **Throughput.** Both sides of every dialog send 100-byte texts, each keeping one
  in flight (the next goes when the other side has received it; every message is
  its own write, as from a person's client); delivered = messages received by the
  other side during the measured window. Chat's relay also sends each message back to its sender (the
  confirmation of SPEC C6); the client reads those and does not count them. So
  does the **confirming floor** (`floor --confirm`), run in these rounds only:
  the floor sending every frame back to its sender as well, three frames per
  message as the relay sends, which bounds what confirming costs.
- **Latency.** The same dialogs at a fixed offered rate (a share of the relay's
  median maximum, the same for every server). Every message carries its
  *intended* send time and latency is measured from it, so a server that stalls
  cannot hide the stall (no coordinated omission). The unloaded figure is from the
  actual send time (the timer's 1 ms granularity would otherwise dominate). Each
  round also times the bare loopback round trip between two threads (`load
  loopback`), what the kernel alone takes for the two hops a relayed message makes.
- **Presence.** One relay, one socket per user: N users online, then M more
  connect, spread evenly over one second. Each online user's client times, for
  every newcomer, from the newcomer's `hello` to the presence frame naming it, and
  records when each presence frame arrived; it scans only the joined users'
  ids out of each frame (by hand, checked against serde in a unit test), so
  that the load generator's CPU, taken from the relay's, goes to reading
  rather than to decoding what it drops. The same burst also runs against the
  floor's presence route (`bench/src/floor/presence.rs`: each client sends its
  own row, as the relay would write it, instead of signing in; the floor
  answers with the same `welcome` and batches the same `presence` frames by
  the relay's rule, but checks no session, keeps no users and encodes no
  JSON; stock tungstenite framing, one task per socket). Chat and floor
  rounds alternate; medians of the rounds.
- **Write coalescing.** The dialogs again, each side keeping 8 messages in flight
  so that frames can queue for a socket; `perf stat` counts the server's `write`,
  `writev`, `sendto` and `sendmsg` calls during the measured window.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_runs_once_a_round_and_the_first_turns() {
        let rounds: Vec<Vec<Kind>> = (1..=4).map(|rep| in_turn(KINDS, rep).collect()).collect();
        assert_eq!(rounds[0], KINDS);
        assert_eq!(rounds[1], [Kind::Floor, Kind::Socketio, Kind::Chat]);
        assert_eq!(rounds[3], rounds[0]);
        for round in &rounds {
            for kind in KINDS {
                assert_eq!(round.iter().filter(|k| **k == kind).count(), 1);
            }
        }
    }

    #[test]
    fn medians_skip_missing_figures() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(vec![]).is_nan());
        let runs = vec![
            (Kind::Chat, serde_json::json!({ "rate": 10.0 })),
            (Kind::Floor, serde_json::json!({ "rate": 99.0 })),
            (Kind::Chat, serde_json::json!({ "rate": 30.0 })),
            (Kind::Chat, serde_json::json!({ "rate": 20.0 })),
        ];
        assert_eq!(med(&runs, Kind::Chat, "/rate"), 20.0);
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(fmt(15_000.0, ""), "15,000");
        assert_eq!(fmt(1_317.4, "/s"), "1,317/s");
        assert_eq!(fmt(0.2551, "×"), "0.26×");
        assert_eq!(fmt(11.94, "KiB"), "11.9 KiB");
        assert_eq!(fmt(10.0, ""), "10");
        assert_eq!(fmt(f64::NAN, "ms"), "–");
        assert_eq!(fmt(1.0 / 0.0, "×"), "–");
    }
}
