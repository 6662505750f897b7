//! Project automation, after the `cargo xtask` pattern: everything a
//! developer or CI runs, written in Rust.
//!
//! - `cargo xtask setup`: installs what is missing (idempotent).
//! - `cargo xtask run [-- RELAY FLAGS…]`: setup, build the app, run the relay.
//! - `cargo xtask test`: setup, then every check and test, with one summary.
//! - `cargo xtask fuzz [SECONDS]`: fuzz the relay's frame handling (SPEC L7).
//! - `cargo xtask soak [-- FLAGS]`: minutes of churn against a release relay.
//! - `cargo xtask bench [--quick]`: the relay against a floor and a
//!   socket.io peer, written up in BENCHMARKS.md.

mod bench;
mod cmd;
mod fuzz;
mod setup;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                 install the toolchain pieces, browser and Redis that are missing
  run [-- RELAY FLAGS]  set up, build the app and serve it with the release relay
  test                  set up, then fmt, clippy, native tests, browser component tests,
                        and the browser end-to-end suite
  soak [-- FLAGS]       10 minutes of churn against a release relay (2,000 clients; flags:
                        --clients N --minutes M), printing memory and open files
  fuzz [SECONDS]        install cargo-fuzz if missing, then fuzz the relay's frame
                        handling for SECONDS (default 60) and sum the run up
  bench [--quick|--idle|--report]
                        the release relay against a bare forwarder (the floor) and a
                        socket.io relay: idle sockets, throughput, latency, presence,
                        write calls; writes BENCHMARKS.md (about 11 minutes). --quick:
                        a smoke run writing target/bench/BENCHMARKS.quick.md; --report:
                        BENCHMARKS.md again from the last run's figures; --idle: only the
                        idle sockets, relay and floor, their memory per socket and ratio";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::setup().map(|_| ()),
        Some("run") => run(&args[1..]),
        Some("test") => test::test(),
        Some("soak") => soak(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("-h" | "--help" | "help") => {
            eprintln!("{USAGE}");
            Ok(())
        }
        other => {
            if let Some(other) = other {
                eprintln!("xtask: unknown command {other:?}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let relay_flags: Vec<&str> = match args.first().map(String::as_str) {
        Some("--") => args[1..].iter().map(String::as_str).collect(),
        Some(other) => anyhow::bail!("unexpected {other:?}: pass relay flags after `--`"),
        None => Vec::new(),
    };
    let tools = setup::setup()?;
    test::build_app(&tools)?;
    cmd::step("starting the relay (Ctrl-C stops it)");
    let dist = root().join("dist");
    let mut relay = tools.command("cargo");
    relay
        .args([
            "run",
            "--release",
            "--package",
            "relay",
            "--",
            "--static-dir",
        ])
        .arg(&dist)
        .args(relay_flags);
    cmd::run(&mut relay)
}

fn soak(args: &[String]) -> anyhow::Result<()> {
    let flags: Vec<&str> = match args.first().map(String::as_str) {
        Some("--") => args[1..].iter().map(String::as_str).collect(),
        Some(other) => anyhow::bail!("unexpected {other:?}: pass soak flags after `--`"),
        None => Vec::new(),
    };
    cmd::step("building the release relay and the soak driver");
    let root = root();
    cmd::run(
        std::process::Command::new("cargo")
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--package",
                "relay",
                "--package",
                "bench",
                "--bin",
                "relay",
                "--bin",
                "soak",
            ]),
    )?;
    cmd::step("soak");
    let relay = root.join("target/release/relay");
    cmd::run(
        std::process::Command::new(root.join("target/release/soak"))
            .current_dir(&root)
            .arg("--relay")
            .arg(relay)
            .args(flags),
    )
}
