//! `cargo xtask fuzz [SECONDS]`: runs the `frames` fuzz target (SPEC L7)
//! for a while, then sums the run up in one line.
//!
//! cargo-fuzz needs nightly flags; `RUSTC_BOOTSTRAP=1` lets the stable
//! toolchain accept them. The fuzzer reads the committed seeds in
//! `fuzz/seeds/frames` and writes what it finds to the git-ignored
//! `fuzz/corpus/frames`; a crashing input lands in `fuzz/artifacts/frames`.
//! The dictionary `fuzz/frames.dict` gives it the protocol's words.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, output_line};
use crate::root;

/// The cargo-fuzz release that installs and runs with this toolchain.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The fuzz target, in `fuzz/fuzz_targets/`.
const TARGET: &str = "frames";
/// How long a run lasts unless told.
const DEFAULT_SECONDS: u64 = 60;
/// The longest input to try: `relay::fuzzing::MAX_INPUT_BYTES`, which every
/// committed seed fits (without it libFuzzer takes the longest seed's size).
const MAX_INPUT_BYTES: usize = 4096;

pub fn fuzz(args: &[String]) -> Result<()> {
    let seconds = match args {
        [] => DEFAULT_SECONDS,
        [seconds] => seconds
            .parse()
            .with_context(|| format!("{seconds:?} is not a number of seconds"))?,
        _ => bail!("usage: cargo xtask fuzz [SECONDS]"),
    };
    ensure_cargo_fuzz()?;

    let fuzz_dir = root().join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(TARGET);
    let seeds = fuzz_dir.join("seeds").join(TARGET);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    cmd::step(&format!("fuzzing `{TARGET}` for {seconds} s"));
    let mut command = Command::new("cargo");
    command
        .current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", TARGET])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_INPUT_BYTES}"))
        .arg(format!("-dict={}", fuzz_dir.join("frames.dict").display()));
    let (ok, run) = run_fuzzer(&mut command)?;

    let corpus_files = std::fs::read_dir(&corpus)?.count();
    let crashes = match &run.artifact {
        None if ok => "crashes: 0".to_string(),
        None => "crashes: the fuzzer failed before writing an input (see above)".to_string(),
        Some(path) => format!("crashes: 1, input in {path}"),
    };
    eprintln!(
        "\nfuzz: {} runs in {} s ({} exec/s), corpus {} inputs ({} files in {}), {crashes}",
        run.runs.map_or("?".into(), |n| n.to_string()),
        run.seconds.map_or("?".into(), |n| n.to_string()),
        run.exec_per_sec.map_or("?".into(), |n| n.to_string()),
        run.corpus.map_or("?".into(), |n| n.to_string()),
        corpus_files,
        relative(&corpus),
    );
    if !ok || run.artifact.is_some() {
        bail!("the fuzzer found a crash; replay it with `cargo fuzz run {TARGET} INPUT`");
    }
    Ok(())
}

/// Installs cargo-fuzz unless `cargo fuzz --version` names the right release.
fn ensure_cargo_fuzz() -> Result<()> {
    let have = output_line("cargo", &["fuzz", "--version"]).unwrap_or_default();
    if have.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION) {
        eprintln!("    ok: {have}");
        return Ok(());
    }
    eprintln!(
        "    installing cargo-fuzz {CARGO_FUZZ_VERSION} (a few minutes); found: {}",
        if have.is_empty() { "none" } else { &have }
    );
    let install = |locked: bool| {
        let mut command = Command::new("cargo");
        command.args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--force",
        ]);
        if locked {
            command.arg("--locked");
        }
        cmd::run(&mut command)
    };
    install(true).or_else(|e| {
        eprintln!("    {e:#}; trying again without --locked");
        install(false)
    })
}

/// What libFuzzer said about the run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    runs: Option<u64>,
    seconds: Option<u64>,
    exec_per_sec: Option<u64>,
    corpus: Option<u64>,
    artifact: Option<String>,
}

impl Run {
    /// Reads one line of libFuzzer's output.
    fn read(&mut self, line: &str) {
        if let Some(status) = line.strip_prefix('#') {
            // `#N  NEW|pulse|DONE  cov: … corp: ENTRIES/SIZE … exec/s: X …`
            let mut words = status.split_whitespace();
            if let Some(n) = words.next().and_then(|n| n.parse().ok()) {
                self.runs = Some(n);
            }
            let words: Vec<&str> = words.collect();
            for pair in words.windows(2) {
                match pair[0] {
                    "corp:" => {
                        let entries = pair[1].split('/').next().unwrap_or_default();
                        self.corpus = entries.parse().ok().or(self.corpus);
                    }
                    "exec/s:" => self.exec_per_sec = pair[1].parse().ok().or(self.exec_per_sec),
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // `Done N runs in S second(s)`
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", seconds, ..] = words[..] {
                self.runs = runs.parse().ok().or(self.runs);
                self.seconds = seconds.parse().ok();
            }
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_string());
        }
    }
}

/// Runs the fuzzer, passing its output (on standard error) through and
/// reading the figures from it.
fn run_fuzzer(command: &mut Command) -> Result<(bool, Run)> {
    eprintln!("    $ RUSTC_BOOTSTRAP=1 cargo fuzz run {TARGET} …");
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start cargo fuzz")?;
    let mut run = Run::default();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).split(b'\n') {
            let line = String::from_utf8_lossy(&line.unwrap_or_default()).into_owned();
            eprintln!("{line}");
            run.read(&line);
        }
    }
    let status = child.wait()?;
    Ok((status.success(), run))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figures_of_a_clean_run() {
        let mut run = Run::default();
        for line in [
            "#2\tINITED cov: 900 ft: 1200 corp: 22/17Kb exec/s: 0 rss: 40Mb",
            "#4096\tpulse  cov: 1500 ft: 3000 corp: 180/30Kb lim: 4096 exec/s: 2048 rss: 60Mb",
            "#123456\tDONE   cov: 2000 ft: 4000 corp: 345/60Kb lim: 4096 exec/s: 2023 rss: 80Mb",
            "Done 123456 runs in 61 second(s)",
        ] {
            run.read(line);
        }
        let expected = Run {
            runs: Some(123_456),
            seconds: Some(61),
            exec_per_sec: Some(2023),
            corpus: Some(345),
            artifact: None,
        };
        assert_eq!(run, expected);
    }

    #[test]
    fn reads_where_a_crash_was_written() {
        let mut run = Run::default();
        run.read("#77\tNEW    cov: 10 ft: 10 corp: 5/1b lim: 4 exec/s: 0 rss: 30Mb L: 1/1 MS: 1 ");
        run.read("artifact_prefix='/w/fuzz/artifacts/frames/'; Test unit written to /w/fuzz/artifacts/frames/crash-abc");
        assert_eq!(run.runs, Some(77));
        assert_eq!(
            run.artifact.as_deref(),
            Some("/w/fuzz/artifacts/frames/crash-abc")
        );
    }
}
