//! libcni's runtime semantics for one delegate network: per-plugin request configs, `prevResult` chaining,
//! capability-filtered `runtimeConfig`, the result cache, and the version gates of CHECK/STATUS/GC
//! (CNI-25..CNI-30, CNI-44, CNI-45, NPWG-61).

use std::{
    collections::HashSet,
    os::fd::AsFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use plexus_cni::{CniArgs, CniResult, CniVersion, GcAttachment, result::ResultError};
use serde_json::{Map, Value};

use crate::{
    pure::netconf::{NetworkConfig, PluginConf},
    seams::exec::{Exec, ExecError, ExecRequest},
    store::resultcache::{self, CachedAttachment},
};

/// The per-attachment runtime parameters (libcni `RuntimeConf`, CNI-24).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`, absent on some DELs (CNI-17).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// Capability arguments; each plugin gets those it declares (CNI-30).
    pub capability_args: Map<String, Value>,
}

/// A delegate network operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    /// The plugin could not be found or run, or it failed.
    #[error("plugin type={plugin_type:?}: {source}")]
    Exec {
        /// The plugin's type.
        plugin_type: String,
        /// Why.
        source: ExecError,
    },
    /// The plugin's ADD output is not a result.
    #[error("plugin type={plugin_type:?} returned an invalid result: {reason}")]
    BadResult {
        /// The plugin's type.
        plugin_type: String,
        /// Why.
        reason: String,
    },
    /// A result could not be converted between versions.
    #[error("result conversion: {0}")]
    Convert(#[from] ResultError),
    /// CHECK on a network whose version predates CHECK (CNI-19).
    #[error("network config version {version} does not support CHECK (needs 0.4.0 or later)")]
    CheckNotSupported {
        /// The network's version.
        version: CniVersion,
    },
    /// CHECK without the ADD's cached result (CNI-19).
    #[error("no cached result for this attachment; CHECK needs the result of its ADD")]
    NoCachedResult,
    /// The result cache could not be written.
    #[error("cannot write the result cache: {0}")]
    Cache(String),
}

impl DelegateError {
    /// The delegate's own CNI error, when it returned one (CNI-39).
    pub fn plugin_reply(&self) -> Option<&plexus_cni::ErrorReply> {
        match self {
            DelegateError::Exec {
                source: ExecError::Plugin { reply, .. },
                ..
            } => Some(reply),
            _ => None,
        }
    }
}

/// Runs delegate networks the way libcni does.
pub struct Invoker<'a> {
    /// How processes are run.
    pub exec: &'a dyn Exec,
    /// `binDir` then `CNI_PATH`.
    pub search_path: Vec<PathBuf>,
    /// The environment passed through to every delegate (CNI-31), without the `CNI_*` variables.
    pub base_env: Vec<(String, String)>,
    /// Per-invocation time limit.
    pub timeout: Duration,
    /// `cniDir`: root of the result cache.
    pub cache_dir: PathBuf,
    /// How result-cache records are written.
    pub cache_writes: CacheWrites,
}

/// How an [`Invoker`] writes its result-cache records.
#[derive(Debug, Clone, Copy, Default)]
pub enum CacheWrites {
    /// Atomically (temp file, fsync, rename) before `add` returns. (plexus's own ADD writes its records
    /// itself, behind: [`Invoker::add_unrecorded`].)
    #[default]
    Durable,
    /// As libcni does (in place, no fsync): for runtime emulations in tests and benchmarks.
    LikeLibcni,
}

/// The plugin type plexus serves itself: Go Multus's `passthru`, a no-op that anchors the auxiliary chain
/// (docs/multus-compat.md, "Auxiliary chain"). Its ADD hands on its `prevResult` (an empty result when it
/// is first, CNI-11); every other command succeeds. A `passthru` binary, if installed, is never run.
pub const PASSTHRU: &str = "passthru";

/// Whether plexus runs plugin type `plugin_type` itself: no binary is looked for or needed.
pub fn is_internal(plugin_type: &str) -> bool {
    plugin_type == PASSTHRU
}

/// The internal `passthru`'s output for `command` with request config `stdin` (built by [`request_config`]).
fn passthru(net: &NetworkConfig, command: &str, stdin: &[u8]) -> Result<Vec<u8>, DelegateError> {
    if command != "ADD" {
        return Ok(Vec::new());
    }
    let prev = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|mut v| v.get_mut("prevResult").map(Value::take));
    let out = match prev {
        // Already in the network's version (request_config converted it).
        Some(prev) => prev.to_string(),
        None => plexus_cni::result::empty_result(net.cni_version).to_json(net.cni_version)?,
    };
    Ok(out.into_bytes())
}

/// Build one plugin's request config (CNI-29): the plugin object with the list's `name` and `cniVersion`,
/// `runtimeConfig` holding only the declared capabilities that were supplied (CNI-30), and `prevResult`.
pub fn request_config(
    net: &NetworkConfig,
    plugin: &PluginConf,
    rt: Option<&RuntimeConf>,
    prev: Option<&CniResult>,
) -> Result<Vec<u8>, DelegateError> {
    let mut obj = plugin.raw.clone();
    obj.insert("name".into(), Value::String(net.name.clone()));
    obj.insert(
        "cniVersion".into(),
        Value::String(net.cni_version.as_str().into()),
    );
    if let Some(rt) = rt {
        let rc: Map<String, Value> = plugin
            .capabilities
            .iter()
            .filter(|(_, on)| **on)
            .filter_map(|(k, _)| rt.capability_args.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(prev) = prev {
        obj.insert("prevResult".into(), prev.to_value(net.cni_version)?);
    }
    serde_json::to_vec(&obj).map_err(|e| DelegateError::Cache(e.to_string()))
}

impl Invoker<'_> {
    fn env(&self, command: &str, rt: Option<&RuntimeConf>) -> Vec<(String, String)> {
        let mut env = self.base_env.clone();
        let path = self
            .search_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let (cid, netns, ifname, args) = match rt {
            Some(rt) => (
                rt.container_id.clone(),
                rt.netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                rt.ifname.clone(),
                rt.args.to_env_string(),
            ),
            None => Default::default(),
        };
        env.extend([
            ("CNI_COMMAND".to_string(), command.to_string()),
            ("CNI_CONTAINERID".to_string(), cid),
            ("CNI_NETNS".to_string(), netns),
            ("CNI_IFNAME".to_string(), ifname),
            ("CNI_ARGS".to_string(), args),
            ("CNI_PATH".to_string(), path),
        ]);
        env
    }

    fn run(
        &self,
        net: &NetworkConfig,
        plugin: &PluginConf,
        command: &str,
        rt: Option<&RuntimeConf>,
        stdin: &[u8],
    ) -> Result<Vec<u8>, DelegateError> {
        if is_internal(&plugin.plugin_type) {
            tracing::debug!(network = %net.name, plugin = %plugin.plugin_type, command, "internal plugin");
            return passthru(net, command, stdin);
        }
        let wrap = |source| DelegateError::Exec {
            plugin_type: plugin.plugin_type.clone(),
            source,
        };
        let path = self
            .exec
            .find(&plugin.plugin_type, &self.search_path)
            .map_err(wrap)?;
        let env = self.env(command, rt);
        // Every operation on a container holds its lock while it runs that container's delegates; each
        // delegate holds it too, so a DEL or ADD after a SIGKILLed plexus waits for its orphans.
        let lock =
            rt.and_then(|rt| crate::store::lock::held_here(&self.cache_dir, &rt.container_id));
        let started = Instant::now();
        let out = self.exec.run(&ExecRequest {
            plugin: &path,
            env: &env,
            stdin,
            timeout: self.timeout,
            lock: lock.as_deref().map(AsFd::as_fd),
        });
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let ifname = rt.map(|r| r.ifname.as_str()).unwrap_or("");
        match out {
            Ok(out) => {
                tracing::debug!(network = %net.name, plugin = %plugin.plugin_type, command, ifname, elapsed_ms, "delegate succeeded");
                if !out.stderr.is_empty() {
                    tracing::info!(network = %net.name, plugin = %plugin.plugin_type, command, "delegate stderr: {}", String::from_utf8_lossy(&out.stderr).trim_end());
                }
                Ok(out.stdout)
            }
            Err(e) => {
                tracing::error!(network = %net.name, plugin = %plugin.plugin_type, command, ifname, elapsed_ms, error = %e, "delegate failed");
                Err(wrap(e))
            }
        }
    }

    fn cached_result(&self, net: &NetworkConfig, rt: &RuntimeConf) -> Option<CniResult> {
        match resultcache::read(&self.cache_dir, &net.name, &rt.container_id, &rt.ifname) {
            Ok(Some(rec)) => rec.result.and_then(|v| match CniResult::from_value(&v, net.cni_version) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(network = %net.name, error = %e, "cached result unusable; continuing without prevResult");
                    None
                }
            }),
            Ok(None) => None,
            Err(e) => {
                // libcni deletes an unreadable record and carries on without it.
                tracing::warn!(network = %net.name, error = %e, "cached result unreadable; removing it");
                let _ = resultcache::remove(&self.cache_dir, &net.name, &rt.container_id, &rt.ifname);
                None
            }
        }
    }

    /// ADD: every plugin in order, each result the next one's `prevResult`; halt on the first error; cache
    /// the final result (CNI-25).
    pub fn add(&self, net: &NetworkConfig, rt: &RuntimeConf) -> Result<CniResult, DelegateError> {
        let (result, rec) = self.add_unrecorded(net, rt)?;
        self.write_record(rec)?;
        Ok(result)
    }

    /// [`Invoker::add`] without its result-cache record, which it returns instead: for a caller that writes
    /// the record itself, once it knows the final result (plexus's ADD moves default routes first).
    pub fn add_unrecorded(
        &self,
        net: &NetworkConfig,
        rt: &RuntimeConf,
    ) -> Result<(CniResult, CachedAttachment), DelegateError> {
        let mut prev: Option<CniResult> = None;
        for plugin in &net.plugins {
            let stdin = request_config(net, plugin, Some(rt), prev.as_ref())?;
            let stdout = self.run(net, plugin, "ADD", Some(rt), &stdin)?;
            let result = CniResult::parse(&stdout, net.cni_version).map_err(|e| {
                DelegateError::BadResult {
                    plugin_type: plugin.plugin_type.clone(),
                    reason: if stdout.iter().all(u8::is_ascii_whitespace) {
                        "empty output".to_string()
                    } else {
                        e.to_string()
                    },
                }
            })?;
            prev = Some(result);
        }
        let result = prev.ok_or_else(|| DelegateError::BadResult {
            plugin_type: String::new(),
            reason: "network has no plugins".into(),
        })?;
        let rec = CachedAttachment {
            kind: resultcache::KIND.into(),
            container_id: rt.container_id.clone(),
            config: net.bytes.clone(),
            if_name: rt.ifname.clone(),
            network_name: net.name.clone(),
            netns: rt
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            cni_args: rt
                .args
                .pairs()
                .iter()
                .map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.to_value(net.cni_version)?),
        };
        Ok((result, rec))
    }

    /// Write an ADD's result-cache record as [`Invoker::cache_writes`] says.
    pub fn write_record(&self, rec: CachedAttachment) -> Result<(), DelegateError> {
        match self.cache_writes {
            CacheWrites::Durable => resultcache::write(&self.cache_dir, &rec),
            CacheWrites::LikeLibcni => resultcache::write_like_libcni(&self.cache_dir, &rec),
        }
        .map_err(|e| DelegateError::Cache(e.to_string()))
    }

    /// DEL: every plugin in reverse, with the cached result as `prevResult` from 0.4.0 on; halt on the first
    /// error (CNI-26); remove the cached result on success.
    pub fn del(&self, net: &NetworkConfig, rt: &RuntimeConf) -> Result<(), DelegateError> {
        self.del_with(net, rt, None)
    }

    /// [`Invoker::del`], the cached result moved into `trash` (when given) instead of unlinked: a daemon
    /// DEL unlinks it after its reply.
    pub fn del_with(
        &self,
        net: &NetworkConfig,
        rt: &RuntimeConf,
        trash: Option<&crate::store::trash::Trash>,
    ) -> Result<(), DelegateError> {
        let prev = if net.cni_version.has_prev_result_on_del() {
            self.cached_result(net, rt)
        } else {
            None
        };
        // One departure from libcni: a plugin whose binary is missing cannot be asked to undo anything, so it
        // does not stop the DEL of the plugins before it (halting would leak their resources). Its error is
        // still returned, and the result cache kept, so the DEL is retried once the binary is back.
        let mut missing = None;
        for plugin in net.plugins.iter().rev() {
            let stdin = request_config(net, plugin, Some(rt), prev.as_ref())?;
            match self.run(net, plugin, "DEL", Some(rt), &stdin) {
                Ok(_) => {}
                Err(
                    e @ DelegateError::Exec {
                        source: ExecError::NotFound { .. },
                        ..
                    },
                ) => {
                    missing.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = missing {
            return Err(e);
        }
        match trash {
            Some(t) => t.discard(&resultcache::path(
                &self.cache_dir,
                &net.name,
                &rt.container_id,
                &rt.ifname,
            )),
            None => resultcache::remove(&self.cache_dir, &net.name, &rt.container_id, &rt.ifname),
        }
        .map_err(|e| DelegateError::Cache(e.to_string()))
    }

    /// CHECK: in order, with the cached result as `prevResult` (CNI-27). `disableCheck` succeeds at once.
    pub fn check(&self, net: &NetworkConfig, rt: &RuntimeConf) -> Result<(), DelegateError> {
        if net.disable_check {
            return Ok(());
        }
        if !net.cni_version.has_check() {
            return Err(DelegateError::CheckNotSupported {
                version: net.cni_version,
            });
        }
        let prev = self
            .cached_result(net, rt)
            .ok_or(DelegateError::NoCachedResult)?;
        for plugin in &net.plugins {
            let stdin = request_config(net, plugin, Some(rt), Some(&prev))?;
            self.run(net, plugin, "CHECK", Some(rt), &stdin)?;
        }
        Ok(())
    }

    /// STATUS: each plugin in order, stopping at the first error; a no-op below 1.1.0 (CNI-20).
    pub fn status(&self, net: &NetworkConfig) -> Result<(), DelegateError> {
        if !net.cni_version.has_status() {
            return Ok(());
        }
        for plugin in &net.plugins {
            let stdin = request_config(net, plugin, None, None)?;
            self.run(net, plugin, "STATUS", None, &stdin)?;
        }
        Ok(())
    }

    /// GC (CNI-28): first DEL every cached attachment of this network that is not in `valid`, then send GC
    /// with both attachment keys (CNI-22) when the network is 1.1.0 or later and GC is not disabled.
    /// Carries on past errors and returns them all.
    pub fn gc(&self, net: &NetworkConfig, valid: &[GcAttachment]) -> Vec<DelegateError> {
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut errors = Vec::new();
        for rec in resultcache::list(&self.cache_dir, None) {
            if rec.network_name != net.name
                || keep.contains(&(rec.container_id.as_str(), rec.if_name.as_str()))
            {
                continue;
            }
            let rt = RuntimeConf {
                container_id: rec.container_id.clone(),
                netns: None,
                ifname: rec.if_name.clone(),
                args: CniArgs::default(),
                capability_args: rec.capability_args.clone(),
            };
            tracing::info!(network = %net.name, container = %rec.container_id, ifname = %rec.if_name, "GC: deleting stale attachment");
            if let Err(e) = self.del(net, &rt) {
                errors.push(e);
            }
        }
        if net.disable_gc || !net.cni_version.has_gc() {
            return errors;
        }
        let list = serde_json::to_value(valid).unwrap_or(Value::Array(Vec::new()));
        for plugin in &net.plugins {
            let mut obj = plugin.raw.clone();
            obj.insert("name".into(), Value::String(net.name.clone()));
            obj.insert(
                "cniVersion".into(),
                Value::String(net.cni_version.as_str().into()),
            );
            obj.insert("cni.dev/valid-attachments".into(), list.clone());
            obj.insert("cni.dev/attachments".into(), list.clone());
            let stdin = match serde_json::to_vec(&obj) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(DelegateError::Cache(e.to_string()));
                    continue;
                }
            };
            if let Err(e) = self.run(net, plugin, "GC", None, &stdin) {
                errors.push(e);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::testing::FakeExec;
    use serde_json::json;

    fn net(v: Value) -> NetworkConfig {
        NetworkConfig::from_value(v).unwrap()
    }

    fn rt() -> RuntimeConf {
        RuntimeConf {
            container_id: "c1".into(),
            netns: Some("/run/netns/p".into()),
            ifname: "net1".into(),
            args: CniArgs::parse("IgnoreUnknown=true;K8S_POD_NAME=p").unwrap(),
            capability_args: serde_json::from_value(
                json!({"portMappings": [{"hostPort": 1}], "mac": "aa:bb:cc:dd:ee:ff"}),
            )
            .unwrap(),
        }
    }

    fn invoker<'a>(exec: &'a FakeExec, dir: &std::path::Path) -> Invoker<'a> {
        Invoker {
            exec,
            search_path: vec!["/opt/cni/bin".into()],
            base_env: vec![("HOME".into(), "/root".into())],
            timeout: Duration::from_secs(5),
            cache_dir: dir.to_path_buf(),
            cache_writes: CacheWrites::Durable,
        }
    }

    fn list() -> NetworkConfig {
        net(json!({"cniVersion": "1.0.0", "name": "l", "plugins": [
            {"type": "bridge", "capabilities": {"mac": true}, "custom": 1},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]}))
    }

    #[test]
    fn add_chains_injects_filters_and_caches_cni_25_29_30() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        let r = invoker(&exec, d.path()).add(&list(), &rt()).unwrap();
        assert_eq!(r.interfaces[0].name, "net1");
        let calls = exec.calls();
        assert_eq!(calls.len(), 2);
        let first = &calls[0];
        assert_eq!(first.stdin["name"], "l");
        assert_eq!(first.stdin["cniVersion"], "1.0.0");
        assert_eq!(first.stdin["custom"], 1);
        assert_eq!(
            first.stdin["runtimeConfig"],
            json!({"mac": "aa:bb:cc:dd:ee:ff"})
        );
        assert!(
            first.stdin.get("prevResult").is_none(),
            "no prevResult on the first ADD"
        );
        assert_eq!(first.env("CNI_COMMAND"), Some("ADD"));
        assert_eq!(first.env("CNI_IFNAME"), Some("net1"));
        assert_eq!(
            first.env("CNI_ARGS"),
            Some("IgnoreUnknown=true;K8S_POD_NAME=p")
        );
        assert_eq!(first.env("CNI_PATH"), Some("/opt/cni/bin"));
        assert_eq!(first.env("HOME"), Some("/root"));
        let second = &calls[1];
        assert_eq!(
            second.stdin["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 1}]})
        );
        assert_eq!(second.stdin["prevResult"]["interfaces"][0]["name"], "net1");
        let rec = resultcache::read(d.path(), "l", "c1", "net1")
            .unwrap()
            .unwrap();
        assert_eq!(rec.config, list().bytes);
        assert_eq!(rec.result.unwrap()["cniVersion"], "1.0.0");
    }

    /// Issue 22: `passthru` is served by plexus (never looked up or run): its ADD gives the next plugin an
    /// empty result as prevResult (CNI-25), and passes a prevResult on when it has one (CNI-11); its other
    /// commands succeed.
    #[test]
    fn passthru_is_internal_and_hands_an_empty_result_on_cni_11_25() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        exec.fail("passthru", "ADD", 7, "the passthru binary must never run");
        exec.fail("passthru", "DEL", 7, "the passthru binary must never run");
        let chain = net(json!({"cniVersion": "1.0.0", "name": "aux", "plugins": [
            {"type": "passthru"}, {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}
        ]}));
        let inv = invoker(&exec, d.path());
        let r = inv.add(&chain, &rt()).unwrap();
        let calls = exec.calls();
        assert_eq!(calls.len(), 1, "only tuning ran: {calls:?}");
        assert_eq!(calls[0].stdin["type"], "tuning");
        assert_eq!(calls[0].stdin["prevResult"], json!({"cniVersion": "1.0.0"}));
        assert!(
            r.interfaces.is_empty() && r.ips.is_empty(),
            "tuning handed the empty result on: {r:?}"
        );
        exec.clear();
        inv.del(&chain, &rt()).unwrap();
        let calls = exec.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].env("CNI_COMMAND"), Some("DEL"));
        // Later in a list, passthru hands its prevResult on unchanged.
        exec.clear();
        let later = net(json!({"cniVersion": "1.0.0", "name": "l2", "plugins": [
            {"type": "bridge"}, {"type": "passthru"}, {"type": "portmap"}
        ]}));
        inv.add(&later, &rt()).unwrap();
        let calls = exec.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[1].stdin["prevResult"]["interfaces"][0]["name"],
            "net1"
        );
    }

    #[test]
    fn add_halts_at_first_error_and_caches_nothing() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        exec.fail("bridge", "ADD", 7, "nope");
        let e = invoker(&exec, d.path()).add(&list(), &rt()).unwrap_err();
        assert_eq!(e.plugin_reply().unwrap().code, 7);
        assert_eq!(exec.calls().len(), 1);
        assert!(
            resultcache::read(d.path(), "l", "c1", "net1")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn del_reverses_with_cached_prev_result_and_removes_cache_cni_26() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        let inv = invoker(&exec, d.path());
        inv.add(&list(), &rt()).unwrap();
        exec.clear();
        inv.del(&list(), &rt()).unwrap();
        let calls = exec.calls();
        assert_eq!(
            calls.iter().map(|c| c.plugin.as_str()).collect::<Vec<_>>(),
            ["portmap", "bridge"]
        );
        assert_eq!(
            calls[0].stdin["prevResult"]["interfaces"][0]["name"],
            "net1"
        );
        assert!(
            resultcache::read(d.path(), "l", "c1", "net1")
                .unwrap()
                .is_none()
        );
        // A second DEL still reaches the plugins, without prevResult.
        exec.clear();
        inv.del(&list(), &rt()).unwrap();
        assert!(exec.calls()[0].stdin.get("prevResult").is_none());
    }

    #[test]
    fn del_continues_past_a_missing_binary_but_reports_it() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        let inv = invoker(&exec, d.path());
        let n = net(
            json!({"cniVersion": "1.0.0", "name": "l", "plugins": [{"type": "bridge"}, {"type": "missing"}]}),
        );
        let e = inv.del(&n, &rt()).unwrap_err();
        assert!(
            matches!(
                e,
                DelegateError::Exec {
                    source: ExecError::NotFound { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            exec.calls()
                .iter()
                .map(|c| c.plugin.as_str())
                .collect::<Vec<_>>(),
            ["bridge"]
        );
        exec.fail("bridge", "DEL", 7, "halt");
        let n2 = net(
            json!({"cniVersion": "1.0.0", "name": "l", "plugins": [{"type": "portmap"}, {"type": "bridge"}]}),
        );
        exec.clear();
        assert!(inv.del(&n2, &rt()).is_err());
        assert_eq!(
            exec.calls().len(),
            1,
            "any other failure still halts the list (CNI-26)"
        );
    }

    #[test]
    fn del_below_0_4_0_sends_no_prev_result() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        let inv = invoker(&exec, d.path());
        let n = net(json!({"cniVersion": "0.3.1", "name": "old", "type": "bridge"}));
        inv.add(&n, &rt()).unwrap();
        exec.clear();
        inv.del(&n, &rt()).unwrap();
        assert!(exec.calls()[0].stdin.get("prevResult").is_none());
    }

    #[test]
    fn check_gates_cni_19() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        let inv = invoker(&exec, d.path());
        let old = net(json!({"cniVersion": "0.3.1", "name": "old", "type": "bridge"}));
        assert!(matches!(
            inv.check(&old, &rt()),
            Err(DelegateError::CheckNotSupported { .. })
        ));
        assert!(matches!(
            inv.check(&list(), &rt()),
            Err(DelegateError::NoCachedResult)
        ));
        inv.add(&list(), &rt()).unwrap();
        exec.clear();
        inv.check(&list(), &rt()).unwrap();
        assert_eq!(exec.calls().len(), 2);
        assert!(
            exec.calls()
                .iter()
                .all(|c| c.stdin.get("prevResult").is_some())
        );
        let off = net(
            json!({"cniVersion": "1.0.0", "name": "l", "disableCheck": true, "plugins": [{"type": "bridge"}]}),
        );
        exec.clear();
        inv.check(&off, &rt()).unwrap();
        assert!(exec.calls().is_empty(), "disableCheck: no call (CNI-5)");
    }

    #[test]
    fn status_only_from_1_1_0() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        let inv = invoker(&exec, d.path());
        inv.status(&list()).unwrap();
        assert!(exec.calls().is_empty());
        let n = net(json!({"cniVersion": "1.1.0", "name": "s", "plugins": [{"type": "bridge"}]}));
        exec.fail("bridge", "STATUS", 50, "not ready");
        assert_eq!(inv.status(&n).unwrap_err().plugin_reply().unwrap().code, 50);
        assert_eq!(exec.calls()[0].env("CNI_CONTAINERID"), Some(""));
    }

    #[test]
    fn gc_deletes_stale_then_sends_both_keys_cni_22_28() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        let inv = invoker(&exec, d.path());
        let n = net(json!({"cniVersion": "1.1.0", "name": "g", "plugins": [{"type": "bridge"}]}));
        let mut keep = rt();
        keep.container_id = "keep".into();
        let mut stale = rt();
        stale.container_id = "stale".into();
        inv.add(&n, &keep).unwrap();
        inv.add(&n, &stale).unwrap();
        exec.clear();
        let valid = vec![GcAttachment {
            container_id: "keep".into(),
            ifname: "net1".into(),
        }];
        assert!(inv.gc(&n, &valid).is_empty());
        let calls = exec.calls();
        assert_eq!(calls[0].env("CNI_COMMAND"), Some("DEL"));
        assert_eq!(calls[0].env("CNI_CONTAINERID"), Some("stale"));
        assert_eq!(calls[1].env("CNI_COMMAND"), Some("GC"));
        assert_eq!(
            calls[1].stdin["cni.dev/valid-attachments"],
            json!([{"containerID": "keep", "ifname": "net1"}])
        );
        assert_eq!(
            calls[1].stdin["cni.dev/attachments"],
            calls[1].stdin["cni.dev/valid-attachments"]
        );
        assert!(
            resultcache::read(d.path(), "g", "stale", "net1")
                .unwrap()
                .is_none()
        );
        assert!(
            resultcache::read(d.path(), "g", "keep", "net1")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn empty_output_on_add_is_an_invalid_result() {
        let d = tempfile::tempdir().unwrap();
        let exec = FakeExec::default();
        exec.reply("bridge", "ADD", b"");
        let e = invoker(&exec, d.path()).add(&list(), &rt()).unwrap_err();
        assert!(e.to_string().contains("empty output"), "{e}");
    }

    /// Real processes for the lock-inheritance tests: a `sh` delegate `fds` in `dir` that writes each of its
    /// descriptors and what it points to (`<fd> <target>`) to `$OUT/<container>.<n>`, starts whatever
    /// `$THEN` says, and answers an empty 1.0.0 result.
    fn fds_delegate(dir: &std::path::Path) -> (NetworkConfig, Vec<(String, String)>) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("fds");
        std::fs::write(
            &p,
            "#!/bin/sh\n\
             out=\"$OUT/$CNI_CONTAINERID.$$\"\n\
             for f in /proc/$$/fd/*; do echo \"${f##*/} $(readlink \"$f\")\"; done > \"$out.tmp\"\n\
             mv \"$out.tmp\" \"$out\"\n\
             eval \"$THEN\"\n\
             echo '{\"cniVersion\":\"1.0.0\",\"interfaces\":[],\"ips\":[]}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let net = net(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fds"}]}));
        let env = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("OUT".to_string(), dir.display().to_string()),
        ];
        (net, env)
    }

    /// The descriptors a delegate of `cid` reported that point into the lock directory.
    fn lock_fds(dir: &std::path::Path, cid: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{cid}.")) && !name.ends_with(".tmp") {
                let text = std::fs::read_to_string(e.path()).unwrap();
                out.push(
                    text.lines()
                        .filter(|l| l.contains("/.locks/"))
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
        out
    }

    /// An invoker running real processes from `dir` (the delegate of [`fds_delegate`]) with `env`.
    fn process_invoker(dir: &std::path::Path, env: Vec<(String, String)>) -> Invoker<'static> {
        Invoker {
            exec: &crate::seams::exec::ProcessExec,
            search_path: vec![dir.to_path_buf()],
            base_env: env,
            timeout: Duration::from_secs(20),
            cache_dir: dir.to_path_buf(),
            cache_writes: CacheWrites::Durable,
        }
    }

    /// The daemon's case: requests for different containers run on threads at once, each spawning
    /// delegates. A delegate gets its own container's lock, at `LOCK_FD`, and never another's, even when
    /// the other thread spawns at the same moment; a delegate run without a lock (STATUS, GC's pass over
    /// the networks) gets none.
    #[test]
    fn a_delegate_inherits_its_own_containers_lock_and_no_other() {
        use crate::store::lock::ContainerLock;
        use std::sync::{Arc, Barrier};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let (net, env) = fds_delegate(&dir);
        const ROUNDS: usize = 15;
        let barrier = Arc::new(Barrier::new(3));
        let threads: Vec<_> = ["a", "b", "nolock"]
            .into_iter()
            .map(|cid| {
                let (dir, net, env, barrier) =
                    (dir.clone(), net.clone(), env.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let invoker = process_invoker(&dir, env);
                    let rt = RuntimeConf {
                        container_id: cid.into(),
                        netns: Some("/run/netns/p".into()),
                        ifname: "net1".into(),
                        ..Default::default()
                    };
                    for _ in 0..ROUNDS {
                        let lock = (cid != "nolock").then(|| {
                            ContainerLock::acquire(&dir, cid, Duration::from_secs(5)).unwrap()
                        });
                        barrier.wait();
                        invoker.add(&net, &rt).unwrap();
                        drop(lock);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for cid in ["a", "b"] {
            let want = vec![format!(
                "{} {}",
                crate::seams::exec::LOCK_FD,
                crate::store::lock::lock_dir(&dir).join(cid).display()
            )];
            let seen = lock_fds(&dir, cid);
            assert_eq!(seen.len(), ROUNDS, "{cid}: one report per delegate");
            for fds in seen {
                assert_eq!(
                    fds, want,
                    "{cid}: its own lock, once, and nothing else of .locks"
                );
            }
        }
        let seen = lock_fds(&dir, "nolock");
        assert_eq!(seen.len(), ROUNDS);
        for fds in seen {
            assert_eq!(
                fds,
                Vec::<String>::new(),
                "no lock for a delegate run without one"
            );
        }
    }

    /// The delegate's children inherit the lock too (an IPAM plugin it runs holds it as long as it does),
    /// but one left running after the operation does not keep the lock: plexus unlocks explicitly.
    #[test]
    fn a_process_a_delegate_leaves_behind_holds_the_lock_only_until_plexus_releases_it() {
        use crate::store::lock::ContainerLock;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let (net, mut env) = fds_delegate(&dir);
        let pid_file = dir.join("left.pid");
        env.push((
            "THEN".into(),
            format!(
                "sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {}",
                pid_file.display()
            ),
        ));
        let invoker = process_invoker(&dir, env);
        let rt = RuntimeConf {
            container_id: "c".into(),
            ifname: "net1".into(),
            ..Default::default()
        };
        let lock = ContainerLock::acquire(&dir, "c", Duration::from_secs(5)).unwrap();
        invoker.add(&net, &rt).unwrap();
        let left = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        let kill_left = || {
            let _ = std::process::Command::new("kill").arg(&left).status();
        };
        let held = std::fs::read_link(format!("/proc/{left}/fd/{}", crate::seams::exec::LOCK_FD));
        if held.as_deref().ok() != Some(crate::store::lock::lock_dir(&dir).join("c").as_path()) {
            kill_left();
            panic!("the delegate's child holds the lock too: {held:?}");
        }
        drop(lock);
        let again = ContainerLock::acquire(&dir, "c", Duration::ZERO);
        kill_left();
        assert!(
            again.is_ok(),
            "free once plexus released it, though the delegate's child still runs: {again:?}"
        );
    }
}
