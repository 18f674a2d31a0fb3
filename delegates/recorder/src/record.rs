//! The record file: one JSON line per invocation, appended safely under concurrency.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::{RECORD_FILE_ENV, Stdin};

/// Where to record: the config's `recordFile`, else `PLEXUS_RECORDER_FILE`, else nowhere.
pub fn target(stdin: &Stdin, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let from_conf = stdin.net_conf().and_then(|c| c.record_file());
    let from_env = env.get(RECORD_FILE_ENV).map(String::as_str);
    from_conf
        .or(from_env)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Builds the record object for one invocation. `env` is filtered to `CNI_*` vars.
pub fn record_value(
    command: &str,
    env: &BTreeMap<String, String>,
    stdin: &Stdin,
    pid: u32,
    time_ms: u128,
) -> Value {
    let cni_env: Map<String, Value> = env
        .iter()
        .filter(|(name, _)| name.starts_with("CNI_"))
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let mut record = Map::new();
    record.insert("command".to_owned(), Value::String(command.to_owned()));
    record.insert("env".to_owned(), Value::Object(cni_env));
    record.insert("stdin".to_owned(), stdin.record_value());
    record.insert("pid".to_owned(), Value::from(pid));
    // Millis since 1970 fit in u64 for the next half a billion years.
    let millis = u64::try_from(time_ms).unwrap_or(u64::MAX);
    record.insert("time_ms".to_owned(), Value::from(millis));
    Value::Object(record)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Appends `record` as one line to `path`, creating the file and its directory.
///
/// The line goes out in a single `write` on an `O_APPEND` descriptor while an
/// exclusive lock is held, so concurrent invocations never interleave.
pub fn append(path: &Path, record: &Value) -> io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
    line.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.lock()?;
    let written = file.write_all(&line);
    let unlocked = file.unlock();
    written?;
    unlocked
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn record_keeps_only_cni_vars() {
        let e = env(&[("CNI_IFNAME", "net1"), ("HOME", "/root"), ("CNI_ARGS", "")]);
        let v = record_value("ADD", &e, &Stdin::parse("{\"x\":1}"), 42, 1234);
        assert_eq!(
            v,
            json!({
                "command": "ADD",
                "env": {"CNI_ARGS": "", "CNI_IFNAME": "net1"},
                "stdin": {"x": 1},
                "pid": 42,
                "time_ms": 1234
            })
        );
    }

    #[test]
    fn target_prefers_config() {
        let e = env(&[(RECORD_FILE_ENV, "/env/file")]);
        let conf = Stdin::parse(r#"{"recordFile":"/conf/file"}"#);
        assert_eq!(target(&conf, &e), Some(PathBuf::from("/conf/file")));
        let plain = Stdin::parse("{}");
        assert_eq!(target(&plain, &e), Some(PathBuf::from("/env/file")));
        assert_eq!(
            target(&Stdin::parse("junk"), &e),
            Some(PathBuf::from("/env/file"))
        );
        assert_eq!(target(&plain, &env(&[])), None);
    }

    #[test]
    fn append_creates_directory_and_adds_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("rec.jsonl");
        append(&path, &json!({"n": 1})).expect("first");
        append(&path, &json!({"n": 2})).expect("second");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
    }
}
