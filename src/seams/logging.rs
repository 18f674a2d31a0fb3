//! Logging with `tracing`: Multus's levels, stderr and/or a size-rotated file (`logFile`, `logOptions`).
//! Stdout is never written here: it belongs to the CNI reply.

use std::{
    fs,
    io::{self, Write},
    path::Path,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use file_rotate::{ContentLimit, FileRotate, compression::Compression, suffix::AppendCount};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{fmt::time::UtcTime, prelude::*};

use crate::pure::config::{LogLevel, LogSettings};

/// The tracing filter for a Multus level: `verbose` is info, `error` shows warnings too (Multus prints its
/// warnings at error level), `panic` is silent.
pub fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Verbose => LevelFilter::INFO,
        LogLevel::Error => LevelFilter::WARN,
        LogLevel::Panic => LevelFilter::OFF,
    }
}

/// Remove rotated files older than `max_age` (lumberjack's `maxAge`); `.1`, `.2.gz`, ... beside `path`.
pub fn prune_old(path: &Path, max_age: Duration) {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(rd) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(base).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let digits = rest.strip_suffix(".gz").unwrap_or(rest);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| now.duration_since(m).unwrap_or_default() > max_age);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn open_file(s: &LogSettings) -> io::Result<Option<FileRotate<AppendCount>>> {
    let Some(path) = &s.file else { return Ok(None) };
    // file-rotate panics when it cannot create the directory; check first so a bad logFile only costs the log.
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if s.max_age_days > 0 {
        prune_old(
            path,
            Duration::from_secs(u64::from(s.max_age_days) * 86_400),
        );
    }
    let compression = if s.compress {
        Compression::OnRotate(0)
    } else {
        Compression::None
    };
    Ok(Some(FileRotate::new(
        path,
        AppendCount::new(s.max_backups.max(1) as usize),
        ContentLimit::BytesSurpassed(s.max_size_mb as usize * 1024 * 1024),
        compression,
        None,
    )))
}

/// Install the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init(s: &LogSettings) {
    let level = filter(s.level);
    if level == LevelFilter::OFF {
        return;
    }
    let file = match open_file(s) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "plexus: cannot open log file {:?}: {e}; logging to stderr only",
                s.file
            );
            None
        }
    };
    let stderr_layer = s.to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_timer(UtcTime::rfc_3339())
    });
    let file_layer = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(Mutex::new(f))
            .with_ansi(false)
            .with_target(false)
            .with_timer(UtcTime::rfc_3339())
    });
    let _ = tracing_subscriber::registry()
        .with(level)
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multus_levels() {
        assert_eq!(filter(LogLevel::Debug), LevelFilter::DEBUG);
        assert_eq!(filter(LogLevel::Verbose), LevelFilter::INFO);
        assert_eq!(filter(LogLevel::Error), LevelFilter::WARN);
        assert_eq!(filter(LogLevel::Panic), LevelFilter::OFF);
    }

    #[test]
    fn prune_removes_only_old_rotations() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("plexus.log");
        for name in [
            "plexus.log",
            "plexus.log.1",
            "plexus.log.2.gz",
            "plexus.log.x",
            "other.1",
        ] {
            fs::write(d.path().join(name), b"x").unwrap();
        }
        let past = SystemTime::now() - Duration::from_secs(10 * 86_400);
        for name in [
            "plexus.log",
            "plexus.log.1",
            "plexus.log.2.gz",
            "plexus.log.x",
            "other.1",
        ] {
            fs::File::options()
                .write(true)
                .open(d.path().join(name))
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        prune_old(&log, Duration::from_secs(86_400));
        let mut left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["other.1", "plexus.log", "plexus.log.x"]);
    }

    #[test]
    fn unwritable_log_dir_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let blocker = d.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let s = LogSettings {
            file: Some(blocker.join("sub/plexus.log")),
            ..LogSettings::default()
        };
        assert!(open_file(&s).is_err());
    }

    #[test]
    fn rotation_by_size_keeps_backups() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("p.log");
        let s = LogSettings {
            file: Some(log.clone()),
            max_size_mb: 1,
            max_backups: 2,
            compress: false,
            ..LogSettings::default()
        };
        let mut f = open_file(&s).unwrap().unwrap();
        let chunk = vec![b'a'; 400 * 1024];
        for _ in 0..8 {
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
        assert!(d.path().join("p.log.1").exists());
        assert!(
            !d.path().join("p.log.3").exists(),
            "at most maxBackups rotated files"
        );
    }
}
