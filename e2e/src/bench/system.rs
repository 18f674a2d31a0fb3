//! The machine, and the binaries measured (plexus and the daemon-mode shim).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::Serialize;
use serde_json::Value;

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// The CNI plugins package (dpkg), if known.
    pub plugins: String,
    /// What `/usr/lib/cni/bridge --version` prints (its first line).
    pub bridge_version: String,
}

fn first_line(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

impl Machine {
    /// Describe this machine.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            plugins: first_line(Command::new("dpkg-query").args([
                "-W",
                "-f",
                "${Package} ${Version}",
                "containernetworking-plugins",
            ])),
            bridge_version: first_line(Command::new("/usr/lib/cni/bridge").arg("--version")),
        }
    }
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// How busy the machine's CPUs are (0..1) over one second in which the bench itself does nothing:
/// other work on the machine skews every number.
pub fn busy_while_idle() -> f64 {
    let a = cpu_jiffies();
    std::thread::sleep(std::time::Duration::from_secs(1));
    match (a, cpu_jiffies()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    }
}

/// Wait (at most `limit`) until a one-second window has the CPUs under 5 % busy: the kernel finishes
/// work a previous phase left behind (network namespaces are torn down asynchronously, by kworkers,
/// after `ip netns del`). Returns how long it waited and the last window's busy fraction.
pub fn settle(limit: std::time::Duration) -> (std::time::Duration, f64) {
    let started = std::time::Instant::now();
    loop {
        let busy = busy_while_idle();
        if busy < 0.05 || started.elapsed() >= limit {
            return (started.elapsed(), busy);
        }
    }
}

/// A binary measured (plexus, or the daemon-mode shim).
#[derive(Debug, Clone, Serialize)]
pub struct Binary {
    /// Its path.
    pub path: PathBuf,
    /// How it came to be.
    pub origin: String,
    /// Whether it is the release build the bench made itself.
    pub release_build: bool,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// The size of a copy passed through `strip` (None when `strip` is missing).
    pub stripped_bytes: Option<u64>,
}

/// The root of the workspace (this crate's parent).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `E2E_PLEXUS_BIN`, or a build of the thin `plexus` made now with cargo as it ships (the root Cargo.toml's
/// `[profile.release-thin]`: release, but `panic = "abort"`), found from cargo's own report of the artifact.
pub fn plexus_binary() -> Result<Binary, String> {
    binary("E2E_PLEXUS_BIN", THIN_PROFILE, "plexus", "plexus", &[])
}

/// The cargo profile the thin `plexus` ships built with (deploy/Containerfile builds it the same way).
pub const THIN_PROFILE: &str = "release-thin";

/// `E2E_DAEMON_BIN`, or a release build of `plexus-daemon` made now (`[profile.release]`: it unwinds, so a
/// request's panic fails that request only). It is not beside the thin `plexus`, which another profile
/// builds: the bench hands its path to every daemon it starts.
pub fn daemon_binary() -> Result<Binary, String> {
    binary("E2E_DAEMON_BIN", "release", "plexus", "plexus-daemon", &[])
}

/// The `--baseline` binary at `path`.
pub fn baseline_binary(path: &Path) -> Result<Binary, String> {
    if !path.is_file() {
        return Err(format!("--baseline {} is not a file", path.display()));
    }
    finish(path.to_path_buf(), "--baseline".into(), false)
}

/// `E2E_SHIM_BIN`, or a release build of package `plexus-shim` (binary `plexus-shim`) made now, as for
/// [`plexus_binary`]: the daemon-mode shim as it ships, linked statically ([`SHIM_RUSTC_FLAGS`]).
pub fn shim_binary() -> Result<Binary, String> {
    binary(
        "E2E_SHIM_BIN",
        "release",
        "plexus-shim",
        "plexus-shim",
        SHIM_RUSTC_FLAGS,
    )
}

/// How the shim ships (deploy/Containerfile builds it the same way): a static executable, glibc and all, so it
/// runs on any host's libc and starts without the dynamic loader (about half a millisecond less per call on the
/// recorded machine, where every CNI call pays it); not position-independent, so it applies no relocations to
/// itself either (about 0.15 ms less again, against static-pie).
pub const SHIM_RUSTC_FLAGS: &[&str] = &[
    "-C",
    "target-feature=+crt-static",
    "-C",
    "relocation-model=static",
];

/// The file named by `var`, else the artifact of `cargo build --profile <profile> -p <package> --bin <bin>`
/// (with `rustc_flags`: `cargo rustc ... -- <rustc_flags>`, which pass them to that binary's own compile and
/// link only).
fn binary(
    var: &str,
    profile: &str,
    package: &str,
    bin: &str,
    rustc_flags: &[&str],
) -> Result<Binary, String> {
    if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(p);
        if !path.is_file() {
            return Err(format!("{var}={} is not a file", path.display()));
        }
        return finish(path, format!("{var} (not built by the bench)"), false);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    let verb = if rustc_flags.is_empty() {
        "build"
    } else {
        "rustc"
    };
    let extra = if rustc_flags.is_empty() {
        String::new()
    } else {
        format!(" -- {}", rustc_flags.join(" "))
    };
    eprintln!(
        "plexus-bench: building {bin}: cargo {verb} --profile {profile} -p {package} --bin {bin}{extra} (manifest {})",
        manifest.display()
    );
    let mut cmd = Command::new(&cargo);
    cmd.args([verb, "--profile", profile, "-p", package, "--bin", bin])
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--message-format", "json-render-diagnostics"]);
    if !rustc_flags.is_empty() {
        cmd.arg("--").args(rustc_flags);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} (set {var} to a {bin} binary instead): {e}",
                Path::new(&cargo).display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "cargo {verb} --profile {profile} -p {package} failed ({})",
            out.status
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == bin
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo reported no {bin} executable"))?;
    finish(
        path,
        format!(
            "cargo {verb} --profile {profile} -p {package}{extra} (root Cargo.toml [profile.{profile}])"
        ),
        true,
    )
}

fn finish(path: PathBuf, origin: String, release_build: bool) -> Result<Binary, String> {
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let size_bytes = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let stripped_bytes = tempfile::tempdir().ok().and_then(|d| {
        let copy = d.path().join("stripped");
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&copy)
            .arg(&path)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| std::fs::metadata(&copy).ok().map(|m| m.len()))
            .flatten()
    });
    Ok(Binary {
        path,
        origin,
        release_build,
        size_bytes,
        stripped_bytes,
    })
}
