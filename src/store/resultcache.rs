//! The libcni result cache under `<cniDir>/results/<network>-<containerID>-<ifname>` (CNI-44), byte-compatible
//! with libcni's `cniCacheV1` records so `cnitool` and Go Multus read what plexus writes and vice versa.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::fsutil;

/// The record kind libcni writes.
pub const KIND: &str = "cniCacheV1";

/// One cached attachment of a delegate network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAttachment {
    /// Always [`KIND`].
    pub kind: String,
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The exact network config bytes (base64, as Go encodes `[]byte`).
    #[serde(with = "b64")]
    pub config: Vec<u8>,
    /// `CNI_IFNAME`.
    #[serde(rename = "ifName")]
    pub if_name: String,
    /// The network name.
    #[serde(rename = "networkName")]
    pub network_name: String,
    /// `CNI_NETNS` at ADD time.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub netns: String,
    /// `CNI_ARGS` pairs.
    #[serde(
        rename = "cniArgs",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cni_args: Vec<[String; 2]>,
    /// The capability arguments given (unfiltered).
    #[serde(
        rename = "capabilityArgs",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    /// The final result of the ADD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Go writes `null` for nil slices and maps; read it as empty.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

mod b64 {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Encode bytes the way Go encodes `[]byte` in JSON.
pub fn encode_bytes(b: &[u8]) -> String {
    B64.encode(b)
}

/// Decode Go's `[]byte` JSON encoding.
pub fn decode_bytes(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    B64.decode(s.as_bytes())
}

/// The results directory.
pub fn results_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("results")
}

/// The file of one attachment.
pub fn path(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    results_dir(cache_dir).join(format!("{network}-{container_id}-{ifname}"))
}

/// Write a record atomically (directory 0700, file 0600).
pub fn write(cache_dir: &Path, rec: &CachedAttachment) -> io::Result<()> {
    let (file, bytes) = prepare(cache_dir, rec)?;
    fsutil::atomic_write(&file, &bytes, 0o600)
}

/// [`write`], finished by `behind` (its thread, or its flush when deferred), the record's encoding included:
/// the caller must [`fsutil::WriteBehind::flush`] before anything reads the record back. The results
/// directory is made here, so a cache directory that cannot hold it fails the caller at once.
pub fn write_behind(
    behind: &fsutil::WriteBehind,
    cache_dir: &Path,
    rec: CachedAttachment,
) -> io::Result<()> {
    let file = file_of(cache_dir, &rec)?;
    behind.submit_with(file, 0o600, move || {
        serde_json::to_vec(&rec).map_err(io::Error::other)
    })
}

/// Write a record as libcni does (`os.WriteFile`: in place, no fsync). Only for runtime emulations that
/// must cost what libcni costs (the e2e harness and the benchmark's floor).
pub fn write_like_libcni(cache_dir: &Path, rec: &CachedAttachment) -> io::Result<()> {
    let (file, bytes) = prepare(cache_dir, rec)?;
    fs::write(file, bytes)
}

fn prepare(cache_dir: &Path, rec: &CachedAttachment) -> io::Result<(PathBuf, Vec<u8>)> {
    let file = file_of(cache_dir, rec)?;
    let bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
    Ok((file, bytes))
}

/// The record's file, its directory made first (0700).
fn file_of(cache_dir: &Path, rec: &CachedAttachment) -> io::Result<PathBuf> {
    fsutil::ensure_dir(&results_dir(cache_dir), 0o700)?;
    Ok(path(
        cache_dir,
        &rec.network_name,
        &rec.container_id,
        &rec.if_name,
    ))
}

/// Read a record. `Ok(None)` when there is none; an unreadable record is an error (libcni then deletes it).
/// A legacy cache file holding only a bare result is returned with just `result` set.
pub fn read(
    cache_dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> io::Result<Option<CachedAttachment>> {
    let p = path(cache_dir, network, container_id, ifname);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse(&bytes, network, container_id, ifname).map(Some)
}

fn parse(
    bytes: &[u8],
    network: &str,
    container_id: &str,
    ifname: &str,
) -> io::Result<CachedAttachment> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if v.get("kind").and_then(Value::as_str) == Some(KIND) {
        return serde_json::from_value(v)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
    }
    if v.is_object() {
        return Ok(CachedAttachment {
            kind: KIND.into(),
            container_id: container_id.into(),
            config: Vec::new(),
            if_name: ifname.into(),
            network_name: network.into(),
            netns: String::new(),
            cni_args: Vec::new(),
            capability_args: Map::new(),
            result: Some(v),
        });
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "cache record is not a JSON object",
    ))
}

/// Remove a record; absent is fine.
pub fn remove(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> io::Result<()> {
    fsutil::remove_if_exists(&path(cache_dir, network, container_id, ifname))
}

/// Every readable `cniCacheV1` record, optionally only those of one container (libcni `GetCachedAttachments`).
pub fn list(cache_dir: &Path, container_id: Option<&str>) -> Vec<CachedAttachment> {
    let Ok(rd) = fs::read_dir(results_dir(cache_dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Some(cid) = container_id
            && !name.contains(&format!("-{cid}-"))
        {
            continue;
        }
        let Ok(bytes) = fs::read(e.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if v.get("kind").and_then(Value::as_str) != Some(KIND) {
            continue;
        }
        let Ok(rec) = serde_json::from_value::<CachedAttachment>(v) else {
            continue;
        };
        if container_id.is_none_or(|cid| rec.container_id == cid) {
            out.push(rec);
        }
    }
    out.sort_by(|a, b| {
        (&a.container_id, &a.network_name, &a.if_name).cmp(&(
            &b.container_id,
            &b.network_name,
            &b.if_name,
        ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(cid: &str, net: &str, ifname: &str) -> CachedAttachment {
        CachedAttachment {
            kind: KIND.into(),
            container_id: cid.into(),
            config: br#"{"name":"n"}"#.to_vec(),
            if_name: ifname.into(),
            network_name: net.into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![["K8S_POD_NAME".into(), "p".into()]],
            capability_args: Map::new(),
            result: Some(json!({"cniVersion": "1.0.0"})),
        }
    }

    #[test]
    fn layout_and_go_compatible_encoding() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &rec("c1", "net", "eth0")).unwrap();
        let p = d.path().join("results/net-c1-eth0");
        let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["kind"], "cniCacheV1");
        assert_eq!(
            v["config"], "eyJuYW1lIjoibiJ9",
            "config is base64 like Go []byte"
        );
        assert_eq!(v["cniArgs"], json!([["K8S_POD_NAME", "p"]]));
        assert_eq!(
            read(d.path(), "net", "c1", "eth0").unwrap().unwrap(),
            rec("c1", "net", "eth0")
        );
        assert!(read(d.path(), "net", "c2", "eth0").unwrap().is_none());
    }

    #[test]
    fn reads_a_record_written_by_libcni() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("results")).unwrap();
        fs::write(
            d.path().join("results/mynet-abc-net1"),
            r#"{"kind":"cniCacheV1","containerId":"abc","config":"eyJhIjoxfQ==","ifName":"net1","networkName":"mynet","netns":"/proc/1/ns/net","cniArgs":null,"capabilityArgs":{"mac":"aa:bb:cc:dd:ee:ff"},"result":{"cniVersion":"0.4.0","ips":[]}}"#,
        )
        .unwrap();
        let r = read(d.path(), "mynet", "abc", "net1").unwrap().unwrap();
        assert_eq!(r.config, br#"{"a":1}"#);
        assert_eq!(r.capability_args["mac"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(list(d.path(), Some("abc")).len(), 1);
    }

    #[test]
    fn legacy_bare_result_and_corrupt_record() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("results")).unwrap();
        fs::write(
            d.path().join("results/n-c-eth0"),
            r#"{"cniVersion":"0.3.1","ips":[]}"#,
        )
        .unwrap();
        let r = read(d.path(), "n", "c", "eth0").unwrap().unwrap();
        assert_eq!(r.result.unwrap()["cniVersion"], "0.3.1");
        fs::write(d.path().join("results/n-c-eth1"), "{trunc").unwrap();
        assert!(read(d.path(), "n", "c", "eth1").is_err());
    }

    #[test]
    fn list_filters_by_container_exactly() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &rec("c1", "a", "eth0")).unwrap();
        write(d.path(), &rec("c1", "b", "net1")).unwrap();
        write(d.path(), &rec("c12", "a", "eth0")).unwrap();
        assert_eq!(list(d.path(), Some("c1")).len(), 2);
        assert_eq!(list(d.path(), None).len(), 3);
        remove(d.path(), "a", "c1", "eth0").unwrap();
        remove(d.path(), "a", "c1", "eth0").unwrap();
        assert_eq!(list(d.path(), Some("c1")).len(), 1);
    }
}
