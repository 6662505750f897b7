//! `cargo xtask setup`: install whatever is missing, and nothing that is
//! there already. Versions come from one place each: trunk's is pinned here,
//! wasm-bindgen's is read from Cargo.lock (the CLI must equal the crate),
//! and wasm-opt's matches `[tools] wasm_opt` in Trunk.toml.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, output_line};
use crate::root;

/// The trunk release that builds with this toolchain (0.22 needs a newer rustc).
pub const TRUNK_VERSION: &str = "0.21.14";
/// The binaryen (wasm-opt) release; Trunk.toml names it as `version_132`.
pub const BINARYEN_VERSION: &str = "132";
/// The Autobahn case runner (PyPI) for the conformance test.
pub const KOSOKU_VERSION: &str = "0.1.0";
/// The socket.io release the benchmark's peer runs; its package.json and
/// package-lock.json name the same.
pub const SOCKETIO_VERSION: &str = "4.8.1";

/// Debian packages the tests need, with the binary each provides.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("redis-server", "/usr/bin/redis-server"),
];

/// Where things are, once set up.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `PATH` for child processes: the project's tool folder first.
    pub path: OsString,
    /// The WebDriver for Chromium.
    pub chromedriver: PathBuf,
    /// The browser.
    pub chromium: PathBuf,
}

impl Tools {
    /// A command that finds the project's tools first on its `PATH`.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(root())
            .env("PATH", &self.path)
            .env("CHROMEDRIVER", &self.chromedriver)
            .env("CHROMIUM", &self.chromium);
        command
    }
}

/// The folder (git-ignored) that holds project-local tools.
fn tools_dir() -> PathBuf {
    root().join(".tools")
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Where Python puts the scripts of installed packages (system and user).
fn python_script_dirs() -> Vec<PathBuf> {
    ["", "posix_user"]
        .iter()
        .filter_map(|scheme| {
            let code = if scheme.is_empty() {
                "import sysconfig; print(sysconfig.get_path('scripts'))".to_string()
            } else {
                format!("import sysconfig; print(sysconfig.get_path('scripts', '{scheme}'))")
            };
            output_line("python3", &["-c", &code]).map(PathBuf::from)
        })
        .collect()
}

fn child_path() -> Result<OsString> {
    let mut dirs = vec![tools_dir().join("node_modules").join(".bin"), cargo_bin()];
    dirs.extend(python_script_dirs());
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    Ok(std::env::join_paths(dirs)?)
}

/// Installs what is missing; returns where everything is.
pub fn setup() -> Result<Tools> {
    cmd::step("setup: checking the toolchain, browser and Redis");
    let path = child_path()?;
    // Tools installed below must be found by the checks that follow.
    std::env::set_var("PATH", &path);

    ensure_wasm_target()?;
    ensure_apt_packages()?;
    ensure_cargo_tool(
        "trunk",
        "trunk",
        TRUNK_VERSION,
        &["--locked"],
        "about 10 minutes on 2 cores",
    )?;
    let bindgen = wasm_bindgen_version()?;
    // No --locked: the CLI's lock file names a crate version the registry lacks.
    ensure_cargo_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        &bindgen,
        &[],
        "about 3 minutes",
    )?;
    ensure_wasm_opt()?;
    ensure_kosoku()?;
    ensure_socketio_peer()?;

    eprintln!("    setup: everything is in place");
    Ok(Tools {
        path,
        chromedriver: PathBuf::from("/usr/bin/chromedriver"),
        chromium: PathBuf::from("/usr/bin/chromium"),
    })
}

fn ensure_wasm_target() -> Result<()> {
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"))
        .unwrap_or(false);
    if listed {
        eprintln!("    ok: wasm32-unknown-unknown target");
        return Ok(());
    }
    eprintln!("    installing the wasm32-unknown-unknown target");
    cmd::run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// `cargo install CRATE --version VERSION` unless `BINARY --version` already
/// says that version.
fn ensure_cargo_tool(
    binary: &str,
    krate: &str,
    version: &str,
    extra: &[&str],
    time: &str,
) -> Result<()> {
    let have = output_line(binary, &["--version"]).unwrap_or_default();
    if have.split_whitespace().any(|word| word == version) {
        eprintln!("    ok: {have}");
        return Ok(());
    }
    eprintln!(
        "    installing {krate} {version} ({time}); found: {}",
        if have.is_empty() { "none" } else { &have }
    );
    cmd::run(
        Command::new("cargo")
            .args(["install", krate, "--version", version, "--force"])
            .args(extra),
    )
}

/// The `wasm-bindgen` crate version in Cargo.lock.
pub fn wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    lock_version(&lock, "wasm-bindgen").context("Cargo.lock names no wasm-bindgen package")
}

fn lock_version(lock: &str, package: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let version = lines
                .next()?
                .trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}

fn ensure_wasm_opt() -> Result<()> {
    let bin = tools_dir().join("node_modules/.bin/wasm-opt");
    let have = output_line(&bin.to_string_lossy(), &["--version"]).unwrap_or_default();
    if have.contains(&format!("version {BINARYEN_VERSION}")) {
        eprintln!("    ok: {have}");
        return Ok(());
    }
    if output_line("npm", &["--version"]).is_none() {
        bail!("npm is missing: install Node.js and npm (Debian: apt-get install nodejs npm), then run again");
    }
    eprintln!(
        "    installing wasm-opt (npm binaryen@{BINARYEN_VERSION}) into {}",
        tools_dir().display()
    );
    std::fs::create_dir_all(tools_dir())?;
    cmd::run(Command::new("npm").args([
        "install",
        "--prefix",
        &tools_dir().to_string_lossy(),
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        &format!("binaryen@{BINARYEN_VERSION}"),
    ]))
}

fn ensure_kosoku() -> Result<()> {
    if output_line("kosoku", &["-h"]).is_some() {
        eprintln!("    ok: kosoku (Autobahn cases)");
        return Ok(());
    }
    if output_line("python3", &["-m", "pip", "--version"]).is_none() {
        bail!("python3 with pip is missing: install it (Debian: apt-get install python3-pip), then run again");
    }
    eprintln!("    installing kosoku {KOSOKU_VERSION} (the Autobahn cases) with pip");
    let root = output_line("id", &["-u"]).as_deref() == Some("0");
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    if !root {
        pip.arg("--user");
    }
    cmd::run(pip.arg(format!("kosoku=={KOSOKU_VERSION}")))?;
    if output_line("kosoku", &["-h"]).is_none() {
        bail!("kosoku was installed but is not on PATH");
    }
    Ok(())
}

/// The benchmark's socket.io peer (`bench/peers/socketio`).
pub fn socketio_dir() -> PathBuf {
    root().join("bench/peers/socketio")
}

/// The socket.io version installed for the peer, if any.
pub fn installed_socketio() -> Option<String> {
    let manifest =
        std::fs::read_to_string(socketio_dir().join("node_modules/socket.io/package.json")).ok()?;
    let at = manifest.find("\"version\"")?;
    let rest = manifest[at + "\"version\"".len()..].trim_start();
    let value = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(value.split('"').next()?.to_string())
}

/// Installs the socket.io peer's packages from its lock file (`npm ci`)
/// into its git-ignored `node_modules`, unless they are there already.
pub fn ensure_socketio_peer() -> Result<()> {
    if installed_socketio().as_deref() == Some(SOCKETIO_VERSION) {
        eprintln!("    ok: socket.io {SOCKETIO_VERSION} (the benchmark's peer)");
        return Ok(());
    }
    if output_line("npm", &["--version"]).is_none() {
        bail!("npm is missing: install Node.js and npm (Debian: apt-get install nodejs npm), then run again");
    }
    eprintln!("    installing socket.io {SOCKETIO_VERSION} for the benchmark's peer (npm ci)");
    cmd::run(Command::new("npm").current_dir(socketio_dir()).args([
        "ci",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ]))?;
    match installed_socketio() {
        Some(v) if v == SOCKETIO_VERSION => Ok(()),
        other => bail!(
            "npm ci installed socket.io {other:?}, not {SOCKETIO_VERSION}: \
             bench/peers/socketio/package.json and SOCKETIO_VERSION disagree"
        ),
    }
}

fn ensure_apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, binary)| !Path::new(binary).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        eprintln!("    ok: chromium, chromedriver, redis-server");
        return Ok(());
    }
    if output_line("id", &["-u"]).as_deref() != Some("0") {
        bail!(
            "missing system packages: {0}. Install them as root \
             (Debian: sudo apt-get install -y {0}), then run again",
            missing.join(" ")
        );
    }
    eprintln!(
        "    installing {} with apt (a few minutes)",
        missing.join(", ")
    );
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q"])
            .args(&missing),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_package_version_from_the_lock_file() {
        let lock = "[[package]]\nname = \"wasm-bindgen-macro\"\nversion = \"9.9.9\"\n\n\
                    [[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n";
        assert_eq!(
            lock_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(lock_version(lock, "trunk"), None);
    }
}
