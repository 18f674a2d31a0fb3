//! The per-container scratch cache `<cniDir>/<containerID>` in the Go Multus format (a JSON array of
//! `DelegateNetConf`; docs/multus-compat.md, "Cache format"), written atomically before any
//! delegate runs and read back on DEL, CHECK and GC. Files written by Go Multus are read as they
//! are; plexus adds keys Go ignores.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use plexus_cni::CniVersion;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{
    pure::{
        netconf::{Kind, NetworkConfig},
        plan::{Attachment, Requests},
    },
    store::{
        fsutil,
        resultcache::{decode_bytes, encode_bytes},
    },
};

/// One cached delegate, field for field as Go Multus marshals `DelegateNetConf`, plus plexus extensions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CachedDelegate {
    /// `types.NetConf` of a single conf (zero value for a list).
    #[serde(rename = "Conf", default)]
    pub conf: Value,
    /// `types.NetConfList` of a list (zero value for a conf).
    #[serde(rename = "ConfList", default)]
    pub conf_list: Value,
    /// Status name (`<ns>/<nad>` for NADs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Explicit interface name.
    #[serde(
        rename = "ifnameRequest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ifname_request: String,
    /// `mac` request.
    #[serde(
        rename = "macRequest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_request: String,
    /// `infiniband-guid` request.
    #[serde(
        rename = "infinibandGUIDRequest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub infiniband_guid_request: String,
    /// `ips` request.
    #[serde(rename = "ipRequest", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_request: Vec<String>,
    /// `default-route` request.
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_request: Option<Vec<String>>,
    /// Go Multus's gateway filter flag (IPv4).
    #[serde(rename = "IsFilterV4Gateway", default)]
    pub filter_v4_gateway: bool,
    /// Go Multus's gateway filter flag (IPv6).
    #[serde(rename = "IsFilterV6Gateway", default)]
    pub filter_v6_gateway: bool,
    /// Device ID given to the delegate.
    #[serde(rename = "deviceID", default, skip_serializing_if = "String::is_empty")]
    pub device_id: String,
    /// The NAD's resource name.
    #[serde(
        rename = "resourceName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_name: String,
    /// The exact delegate config, base64 (Go `[]byte`); lossless.
    #[serde(rename = "Bytes", default)]
    pub bytes: Option<String>,
    /// plexus: the interface the delegate was attached on.
    #[serde(
        rename = "plexusIfName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub if_name: Option<String>,
    /// plexus: the per-network `portMappings` request (Go Multus does not cache it; docs/multus-compat.md,
    /// "Cache format").
    #[serde(
        rename = "portMappingsRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub port_mappings_request: Option<Value>,
    /// plexus: the per-network `bandwidth` request.
    #[serde(
        rename = "bandwidthRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bandwidth_request: Option<Value>,
    /// plexus: the attachment's CNI device-info file, removed on DEL (NPWG-71). Go Multus derives it
    /// from the name, container and interface instead.
    #[serde(
        rename = "plexusDeviceInfoFile",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info_file: Option<String>,
    /// plexus: this entry is the auxiliary chain (docs/multus-compat.md, "Auxiliary chain").
    #[serde(
        rename = "plexusAuxiliaryChain",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub auxiliary_chain: bool,
    /// plexus: whether this entry is one of the pod's networks annotation's (only these are hot-plugged;
    /// docs/daemon.md, "Hot-plug"). Always written; absent in a cache from before hot-plug, which then
    /// cannot tell the pod's networks from the node's.
    #[serde(
        rename = "plexusPodNetwork",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pod_network: Option<bool>,
    /// plexus: the daemon's hot-plug attached this entry to the running sandbox; one without a result record
    /// is an interrupted hot-plug (undone by the next reconcile), not an unfinished ADD.
    #[serde(
        rename = "plexusHotplugged",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub hotplugged: bool,
}

/// The outcome of reading a container's cache.
#[derive(Debug)]
pub enum ReadOutcome {
    /// No cache file.
    Missing,
    /// A file that does not parse (truncated by a crash, say): never skip teardown silently.
    Corrupt(String),
    /// The delegates, in ADD order.
    Found(Vec<CachedDelegate>),
}

/// A cache entry that cannot be turned back into a delegate.
#[derive(Debug, thiserror::Error)]
#[error("cached delegate {index} ({name:?}): {reason}")]
pub struct EntryError {
    /// Position in the cache.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The cache file of a container.
pub fn path(cni_dir: &Path, container_id: &str) -> PathBuf {
    cni_dir.join(container_id)
}

fn go_plugin_conf(obj: &Map<String, Value>) -> Value {
    let mut m = Map::new();
    for key in ["cniVersion", "name", "type"] {
        if let Some(Value::String(s)) = obj.get(key)
            && !s.is_empty()
        {
            m.insert(key.into(), Value::String(s.clone()));
        }
    }
    if let Some(Value::Object(caps)) = obj.get("capabilities")
        && !caps.is_empty()
    {
        m.insert("capabilities".into(), Value::Object(caps.clone()));
    }
    let ipam_type = obj
        .get("ipam")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    m.insert(
        "ipam".into(),
        if ipam_type.is_empty() {
            json!({})
        } else {
            json!({"type": ipam_type})
        },
    );
    m.insert(
        "dns".into(),
        obj.get("dns")
            .filter(|d| d.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    Value::Object(m)
}

impl CachedDelegate {
    /// The cache entry for a planned attachment.
    pub fn from_attachment(a: &Attachment) -> CachedDelegate {
        let net = &a.network;
        let (conf, conf_list) = match net.kind {
            Kind::Conf => (go_plugin_conf(&net.value), json!({})),
            Kind::List => {
                let mut list = Map::new();
                for key in ["cniVersion", "name"] {
                    if let Some(Value::String(s)) = net.value.get(key) {
                        list.insert(key.into(), Value::String(s.clone()));
                    }
                }
                if let Some(v) = net.value.get("cniVersions") {
                    list.insert("cniVersions".into(), v.clone());
                }
                if net.disable_check {
                    list.insert("disableCheck".into(), Value::Bool(true));
                }
                if net.disable_gc {
                    list.insert("disableGC".into(), Value::Bool(true));
                }
                list.insert(
                    "plugins".into(),
                    Value::Array(net.plugins.iter().map(|p| go_plugin_conf(&p.raw)).collect()),
                );
                (json!({"ipam": {}, "dns": {}}), Value::Object(list))
            }
        };
        let r = &a.requests;
        CachedDelegate {
            conf,
            conf_list,
            name: a.status_name.clone(),
            ifname_request: a.ifname_request.clone().unwrap_or_default(),
            mac_request: r.mac.clone().unwrap_or_default(),
            infiniband_guid_request: r.infiniband_guid.clone().unwrap_or_default(),
            ip_request: r.ips.clone(),
            gateway_request: r.gateways.clone(),
            filter_v4_gateway: false,
            filter_v6_gateway: false,
            device_id: r.device_id.clone().unwrap_or_default(),
            resource_name: a.resource_name.clone().unwrap_or_default(),
            bytes: Some(encode_bytes(&net.bytes)),
            if_name: Some(a.ifname.clone()),
            port_mappings_request: r.port_mappings.clone(),
            bandwidth_request: r.bandwidth.clone(),
            device_info_file: r.device_info_file.clone(),
            auxiliary_chain: a.auxiliary,
            pod_network: Some(a.pod_network),
            hotplugged: a.hotplugged,
        }
    }

    /// Rebuild the attachment at `index` (0 is the cluster network). The interface is the one plexus
    /// recorded; for a Go Multus entry it is derived as Multus does (docs/multus-compat.md, "Interface
    /// names"). A list without a version gets `version`, as Go Multus backfills on DEL
    /// (docs/multus-compat.md, "DEL").
    pub fn to_attachment(
        &self,
        index: usize,
        master_ifname: &str,
        version: CniVersion,
    ) -> Result<Attachment, EntryError> {
        let err = |reason: String| EntryError {
            index,
            name: self.name.clone(),
            reason,
        };
        let raw = match self.bytes.as_deref().filter(|b| !b.is_empty()) {
            Some(b64) => decode_bytes(b64).map_err(|e| err(format!("Bytes is not base64: {e}")))?,
            None => self
                .rebuild_bytes()
                .ok_or_else(|| err("no Bytes and no Conf/ConfList to rebuild from".into()))?,
        };
        let network = NetworkConfig::from_bytes(&raw)
            .and_then(|n| n.with_version_if_missing(version))
            .map_err(|e| err(e.to_string()))?;
        let ifname_request = Some(self.ifname_request.clone()).filter(|s| !s.is_empty());
        let ifname = match (&self.if_name, &ifname_request, index) {
            (Some(recorded), _, _) => recorded.clone(),
            (None, Some(req), _) => req.clone(),
            (None, None, 0) => master_ifname.to_string(),
            (None, None, i) => format!("net{i}"),
        };
        let status_name = if self.name.is_empty() {
            network.name.clone()
        } else {
            self.name.clone()
        };
        let some = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        Ok(Attachment {
            network,
            ifname,
            master: index == 0,
            status_name,
            ifname_request,
            requests: Requests {
                mac: some(&self.mac_request),
                ips: self.ip_request.clone(),
                infiniband_guid: some(&self.infiniband_guid_request),
                port_mappings: self.port_mappings_request.clone(),
                bandwidth: self.bandwidth_request.clone(),
                device_id: some(&self.device_id),
                gateways: self.gateway_request.clone(),
                device_info_file: self.device_info_file.clone(),
            },
            resource_name: some(&self.resource_name),
            auxiliary: self.auxiliary_chain,
            pod_network: self.pod_network.unwrap_or(false),
            hotplugged: self.hotplugged,
        })
    }

    /// Caches from Go Multus before #1521 may lack `Bytes`; rebuild a (lossy) config from Conf/ConfList.
    fn rebuild_bytes(&self) -> Option<Vec<u8>> {
        let plugins = self
            .conf_list
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty());
        let v = if plugins.is_some() {
            self.conf_list.clone()
        } else if self
            .conf
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
        {
            self.conf.clone()
        } else {
            return None;
        };
        serde_json::to_vec(&v).ok()
    }
}

/// Write the cache for `attachments` atomically (directory 0700, file 0600): written whole into its temp
/// file now, so the first delegate can start at once; synced, renamed into place and the directory synced by
/// `behind` while the delegates run (its flush fails if any of that does). A crash before the rename leaves
/// the whole temp file, which [`read`] finds. An error leaves no cache file from this write.
pub fn write(
    cni_dir: &Path,
    container_id: &str,
    attachments: &[Attachment],
    behind: &fsutil::WriteBehind,
) -> io::Result<()> {
    fsutil::ensure_dir(cni_dir, 0o700)?;
    let entries: Vec<CachedDelegate> = attachments
        .iter()
        .map(CachedDelegate::from_attachment)
        .collect();
    let bytes = serde_json::to_vec(&entries).map_err(io::Error::other)?;
    let file = path(cni_dir, container_id);
    // Whole in the temp file before the first delegate runs (a crash from here on leaves it for DEL); synced
    // and in place while the delegates run, and before the ADD answers.
    let tmp = fsutil::stage(&file, &bytes, 0o600)?;
    behind.sync_and_rename(tmp.clone(), file).inspect_err(|_| {
        let _ = fsutil::remove_if_exists(&tmp);
    })
}

fn parse(bytes: &[u8]) -> ReadOutcome {
    match serde_json::from_slice::<Vec<CachedDelegate>>(bytes) {
        Ok(entries) if !entries.is_empty() => ReadOutcome::Found(entries),
        Ok(_) => ReadOutcome::Corrupt("the cache holds no delegates".into()),
        Err(e) => ReadOutcome::Corrupt(e.to_string()),
    }
}

/// Whether `name` is the temp file of an atomic write of `target` (`.<target>.tmp.<pid>`).
pub fn is_temp_of(name: &str, target: impl Fn(&str) -> bool) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp."))
        .is_some_and(|(t, pid)| {
            !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && target(t)
        })
}

/// Read a container's cache. Without a cache file, the temp file of an ADD killed before its cache was
/// renamed into place ([`write`]) is the cache: it was whole before that ADD's first delegate ran. A temp
/// file that does not parse was cut short before any delegate ran, and counts as no cache.
pub fn read(cni_dir: &Path, container_id: &str) -> io::Result<ReadOutcome> {
    match fs::read(path(cni_dir, container_id)) {
        Ok(b) => return Ok(parse(&b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut staged: Vec<(std::time::SystemTime, PathBuf)> = match fs::read_dir(cni_dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| is_temp_of(n, |t| t == container_id))
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    // The newest first: an older one belongs to an ADD that a later one has already torn down.
    staged.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (_, tmp) in staged {
        if let Ok(bytes) = fs::read(&tmp)
            && let found @ ReadOutcome::Found(_) = parse(&bytes)
        {
            tracing::warn!(
                "container {container_id}: no cache file, but an interrupted ADD's {}; using it",
                tmp.display()
            );
            return Ok(found);
        }
    }
    Ok(ReadOutcome::Missing)
}

/// Write the cache for `attachments` again through `behind`, each entry with Go Multus's
/// `IsFilterV4Gateway`/`IsFilterV6Gateway` flags from `flags` (in order): plexus moved the default route
/// (NPWG-34), and the flags record which delegates lost which default routes (Go Multus reads them only
/// during its own ADD). Built from the attachments, never read back; `behind` lands it after [`write`]'s
/// staged file (one path's writes stay in order).
pub fn write_gateway_filters(
    cni_dir: &Path,
    container_id: &str,
    attachments: &[Attachment],
    flags: &[(bool, bool)],
    behind: &fsutil::WriteBehind,
) -> io::Result<()> {
    let mut entries: Vec<CachedDelegate> = attachments
        .iter()
        .map(CachedDelegate::from_attachment)
        .collect();
    for (e, (v4, v6)) in entries.iter_mut().zip(flags) {
        e.filter_v4_gateway = *v4;
        e.filter_v6_gateway = *v6;
    }
    let bytes = serde_json::to_vec(&entries).map_err(io::Error::other)?;
    behind.submit(path(cni_dir, container_id), bytes, 0o600)
}

/// Remove a container's cache; absent is fine.
pub fn remove(cni_dir: &Path, container_id: &str) -> io::Result<()> {
    fsutil::remove_if_exists(&path(cni_dir, container_id))
}

/// Container IDs that have a cache file in `cni_dir`.
pub fn containers(cni_dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(cni_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| plexus_cni::validate::container_id(n).is_ok())
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::plan::{NetworkRequest, plan};

    /// [`write`], its directory sync done before it returns.
    fn store(dir: &Path, container_id: &str, attachments: &[Attachment]) {
        let behind = fsutil::WriteBehind::default();
        write(dir, container_id, attachments, &behind).unwrap();
        behind.flush().unwrap();
    }

    fn attachments() -> Vec<Attachment> {
        let conf = NetworkConfig::from_bytes(br#"{"cniVersion":"0.3.1","name":"cluster","type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/16"},"custom":{"keep":true}}"#).unwrap();
        let list = NetworkConfig::from_bytes(br#"{"cniVersion":"1.0.0","name":"ml","plugins":[{"type":"macvlan","master":"eth1","capabilities":{"ips":true}},{"type":"tuning","sysctl":{"x":"1"}}]}"#).unwrap();
        let mut second = NetworkRequest::plain(list);
        second.status_name = "ns1/ml".into();
        second.ifname_request = Some("data0".into());
        second.requests.ips = vec!["10.2.0.5/24".into()];
        second.requests.port_mappings = Some(json!([{"hostPort": 8080, "containerPort": 80}]));
        plan("eth0", vec![NetworkRequest::plain(conf), second]).unwrap()
    }

    #[test]
    fn round_trip_is_lossless() {
        let d = tempfile::tempdir().unwrap();
        let a = attachments();
        store(d.path(), "cid1", &a);
        let ReadOutcome::Found(entries) = read(d.path(), "cid1").unwrap() else {
            panic!()
        };
        let back: Vec<Attachment> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| e.to_attachment(i, "eth0", CniVersion::V1_0_0).unwrap())
            .collect();
        assert_eq!(back, a);
    }

    #[test]
    fn go_multus_shape() {
        let d = tempfile::tempdir().unwrap();
        store(d.path(), "cid1", &attachments());
        let v: Value = serde_json::from_slice(&fs::read(d.path().join("cid1")).unwrap()).unwrap();
        let first = &v[0];
        assert_eq!(
            first["Conf"],
            json!({"cniVersion": "0.3.1", "name": "cluster", "type": "bridge", "ipam": {"type": "host-local"}, "dns": {}})
        );
        assert_eq!(first["ConfList"], json!({}));
        assert_eq!(first["IsFilterV4Gateway"], false);
        let second = &v[1];
        assert_eq!(
            second["ConfList"]["plugins"][0]["type"], "macvlan",
            "Go Multus detects conflists by ConfList.plugins"
        );
        assert_eq!(second["ifnameRequest"], "data0");
        assert_eq!(second["ipRequest"], json!(["10.2.0.5/24"]));
        assert_eq!(second["name"], "ns1/ml");
        let bytes = decode_bytes(second["Bytes"].as_str().unwrap()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap()["plugins"][0]["master"],
            "eth1"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(d.path().join("cid1"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
        }
    }

    /// A cache as Go Multus v4 writes it (no plexus keys): interfaces derive as Multus does, a list without a
    /// version gets plexus's.
    #[test]
    fn reads_a_go_multus_cache() {
        let d = tempfile::tempdir().unwrap();
        let b0 = encode_bytes(br#"{"cniVersion":"0.3.1","name":"kindnet","type":"ptp"}"#);
        let b1 = encode_bytes(br#"{"name":"mv","plugins":[{"type":"macvlan"}]}"#);
        let b2 = encode_bytes(br#"{"cniVersion":"0.3.1","name":"br","type":"bridge"}"#);
        let body = format!(
            r#"[{{"Conf":{{"cniVersion":"0.3.1","name":"kindnet","type":"ptp","ipam":{{}},"dns":{{}}}},"ConfList":{{}},"name":"kindnet","IsFilterV4Gateway":false,"IsFilterV6Gateway":false,"Bytes":"{b0}"}},
                {{"Conf":{{"ipam":{{}},"dns":{{}}}},"ConfList":{{"name":"mv","plugins":[{{"type":"macvlan","ipam":{{}},"dns":{{}}}}]}},"name":"default/mv","macRequest":"02:00:00:00:00:07","IsFilterV4Gateway":false,"IsFilterV6Gateway":false,"Bytes":"{b1}"}},
                {{"Conf":{{"cniVersion":"0.3.1","name":"br","type":"bridge","ipam":{{}},"dns":{{}}}},"ConfList":{{}},"name":"default/br","ifnameRequest":"custom","IsFilterV4Gateway":false,"IsFilterV6Gateway":false,"Bytes":"{b2}"}}]"#
        );
        fs::write(d.path().join("abc"), body).unwrap();
        let ReadOutcome::Found(entries) = read(d.path(), "abc").unwrap() else {
            panic!()
        };
        let a: Vec<Attachment> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| e.to_attachment(i, "eth0", CniVersion::V0_4_0).unwrap())
            .collect();
        assert_eq!(
            a.iter().map(|a| a.ifname.as_str()).collect::<Vec<_>>(),
            ["eth0", "net1", "custom"]
        );
        assert_eq!(a[1].network.cni_version, CniVersion::V0_4_0);
        assert_eq!(a[1].requests.mac.as_deref(), Some("02:00:00:00:00:07"));
        assert_eq!(a[1].status_name, "default/mv");
    }

    #[test]
    fn gateway_filters_are_written_after_the_staged_cache() {
        let d = tempfile::tempdir().unwrap();
        let behind = fsutil::WriteBehind::deferred();
        write(d.path(), "cid1", &attachments(), &behind).unwrap();
        write_gateway_filters(
            d.path(),
            "cid1",
            &attachments(),
            &[(true, false), (false, true)],
            &behind,
        )
        .unwrap();
        assert!(!d.path().join("cid1").exists(), "deferred until the flush");
        behind.flush().unwrap();
        let v: Value = serde_json::from_slice(&fs::read(d.path().join("cid1")).unwrap()).unwrap();
        assert_eq!(v[0]["IsFilterV4Gateway"], true);
        assert_eq!(v[0]["IsFilterV6Gateway"], false);
        assert_eq!(v[1]["IsFilterV4Gateway"], false);
        assert_eq!(v[1]["IsFilterV6Gateway"], true);
        assert_eq!(v[1]["ifnameRequest"], "data0", "the rest is kept");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cid1"], "no temp file left");
    }

    /// An ADD killed after its cache was staged and before the write-behind renamed it into place left only
    /// the temp file: that is the cache DEL must find. A torn temp file (killed while writing it, before
    /// any delegate) is no cache; a cache file in place wins; the newest temp file wins.
    #[test]
    fn an_interrupted_adds_staged_cache_is_read() {
        let d = tempfile::tempdir().unwrap();
        let bytes = serde_json::to_vec(
            &attachments()
                .iter()
                .map(CachedDelegate::from_attachment)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let tmp = fsutil::stage(&path(d.path(), "cid1"), &bytes, 0o600).unwrap();
        assert!(!path(d.path(), "cid1").exists(), "not renamed yet");
        let ReadOutcome::Found(entries) = read(d.path(), "cid1").unwrap() else {
            panic!("the staged cache is not read")
        };
        assert_eq!(entries.len(), 2);
        assert!(
            containers(d.path()).is_empty(),
            "a temp file is not a container"
        );
        // Another container's temp file is not this one's.
        assert!(matches!(
            read(d.path(), "cid2").unwrap(),
            ReadOutcome::Missing
        ));

        // Torn: as if killed in the middle of the write.
        fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            read(d.path(), "cid1").unwrap(),
            ReadOutcome::Missing
        ));
        // An older whole temp file of another process, and the torn newer one: the whole one is read.
        let older = d.path().join(".cid1.tmp.1");
        fs::write(&older, &bytes).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&older)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(matches!(
            read(d.path(), "cid1").unwrap(),
            ReadOutcome::Found(_)
        ));
        // The cache file in place wins over any temp file.
        fs::write(path(d.path(), "cid1"), b"[]").unwrap();
        assert!(matches!(
            read(d.path(), "cid1").unwrap(),
            ReadOutcome::Corrupt(_)
        ));
    }

    #[test]
    fn a_staged_cache_is_in_place_and_its_temp_file_gone_after_the_flush() {
        let d = tempfile::tempdir().unwrap();
        let behind = fsutil::WriteBehind::default();
        write(d.path(), "cid1", &attachments(), &behind).unwrap();
        behind.flush().unwrap();
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["cid1"]);
        let mode = fs::metadata(path(d.path(), "cid1")).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn missing_corrupt_and_empty() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(read(d.path(), "x").unwrap(), ReadOutcome::Missing));
        fs::write(d.path().join("x"), br#"[{"Conf":{"#).unwrap();
        assert!(matches!(
            read(d.path(), "x").unwrap(),
            ReadOutcome::Corrupt(_)
        ));
        fs::write(d.path().join("x"), b"[]").unwrap();
        assert!(matches!(
            read(d.path(), "x").unwrap(),
            ReadOutcome::Corrupt(_)
        ));
        remove(d.path(), "x").unwrap();
        remove(d.path(), "x").unwrap();
    }

    #[test]
    fn containers_lists_only_cache_files() {
        let d = tempfile::tempdir().unwrap();
        store(d.path(), "c1", &attachments());
        fs::create_dir_all(d.path().join("results")).unwrap();
        fs::write(d.path().join(".c2.tmp.1"), b"x").unwrap();
        assert_eq!(containers(d.path()), vec!["c1".to_string()]);
    }

    #[test]
    fn entry_without_bytes_rebuilds_from_conf() {
        let e: CachedDelegate = serde_json::from_value(json!({"Conf": {"cniVersion": "0.3.1", "name": "x", "type": "bridge", "ipam": {}, "dns": {}}, "ConfList": {}, "Bytes": null})).unwrap();
        let a = e.to_attachment(0, "eth0", CniVersion::V0_3_1).unwrap();
        assert_eq!(a.network.plugins[0].plugin_type, "bridge");
        let e: CachedDelegate =
            serde_json::from_value(json!({"Conf": {"ipam": {}, "dns": {}}, "ConfList": {}}))
                .unwrap();
        assert!(e.to_attachment(0, "eth0", CniVersion::V0_3_1).is_err());
    }
}
