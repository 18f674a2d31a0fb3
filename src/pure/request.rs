//! The CNI request: the `CNI_*` environment parsed and validated per command (CNI-7, CNI-8, CNI-53).

use std::{collections::BTreeMap, fmt, path::PathBuf};

use plexus_cni::{CniArgs, validate};

/// A CNI operation (CNI-7): the one verb enum, shared with the shim.
pub use plexus_cni::Command;

/// Why the environment was refused; every variant maps to CNI code 4 (invalid environment).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// `CNI_COMMAND` names no operation.
    #[error("unknown CNI_COMMAND: {0}")]
    UnknownCommand(String),
    /// Variables the command needs are absent (skel's wording, CNI-59).
    #[error("required env variables [{}] missing", .0.join(","))]
    Missing(Vec<&'static str>),
    /// A variable is present but invalid.
    #[error("invalid {var}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong and what is valid.
        reason: String,
    },
}

/// The pod a request is for, from the `K8S_POD_*` keys of `CNI_ARGS` (CNI-51).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`, absent from older runtimes.
    pub uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub infra_container_id: Option<String>,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if let Some(uid) = &self.uid {
            write!(f, "/{uid}")?;
        }
        Ok(())
    }
}

/// A parsed and validated CNI request environment.
#[derive(Debug, Clone)]
pub struct CniEnv {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID` (validated when present).
    pub container_id: Option<String>,
    /// `CNI_NETNS`; empty is treated as absent.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (validated when present).
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// `CNI_PATH` split on `:`.
    pub path: Vec<PathBuf>,
    /// The rest of the process environment, passed through to delegates (CNI-31, CNI-54).
    pub passthrough: BTreeMap<String, String>,
}

/// The names of the variables the CNI protocol owns; they are never passed through verbatim.
pub const CNI_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

impl CniEnv {
    /// Parse the environment. `Ok(None)` means `CNI_COMMAND` is unset (print the about text).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Option<CniEnv>, RequestError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut all: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let Some(command) = all.remove("CNI_COMMAND") else {
            return Ok(None);
        };
        let command = Command::parse(&command)
            .ok_or_else(|| RequestError::UnknownCommand(command.clone()))?;
        // The process edge reads the environment lossily; a replacement character in a protocol
        // variable means bytes that were not UTF-8, and passing the altered value on (an interface name,
        // a path) would act on something the runtime never asked for.
        for var in CNI_VARS {
            if let Some(v) = all
                .get(var)
                .filter(|v| v.contains(char::REPLACEMENT_CHARACTER))
            {
                return Err(RequestError::Invalid {
                    var,
                    reason: format!(
                        "it is not valid UTF-8 (read as {v:?}, U+FFFD marking the bad bytes); CNI variables must be UTF-8"
                    ),
                });
            }
        }
        let take =
            |all: &mut BTreeMap<String, String>, k: &str| all.remove(k).filter(|v| !v.is_empty());
        let container_id = take(&mut all, "CNI_CONTAINERID");
        let netns = take(&mut all, "CNI_NETNS").map(PathBuf::from);
        let ifname = take(&mut all, "CNI_IFNAME");
        let raw_args = take(&mut all, "CNI_ARGS").unwrap_or_default();
        let path = take(&mut all, "CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();

        // CNI-8: which variables each operation requires.
        let mut missing = Vec::new();
        let needs_attachment = matches!(command, Command::Add | Command::Check | Command::Del);
        if needs_attachment && container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if matches!(command, Command::Add | Command::Check) && netns.is_none() {
            missing.push("CNI_NETNS");
        }
        if needs_attachment && ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
        if !missing.is_empty() {
            return Err(RequestError::Missing(missing));
        }
        if let Some(id) = &container_id {
            validate::container_id(id).map_err(|e| RequestError::Invalid {
                var: "CNI_CONTAINERID",
                reason: e.to_string(),
            })?;
        }
        if let Some(name) = &ifname {
            validate::interface_name(name).map_err(|e| RequestError::Invalid {
                var: "CNI_IFNAME",
                reason: e.to_string(),
            })?;
        }
        let args = CniArgs::parse(&raw_args).map_err(|e| RequestError::Invalid {
            var: "CNI_ARGS",
            reason: e.to_string(),
        })?;
        for var in CNI_VARS {
            all.remove(var);
        }
        Ok(Some(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
            passthrough: all,
        }))
    }

    /// The container ID; only call for commands that require it.
    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    /// The interface name the runtime asked for (the cluster network's name).
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or("eth0")
    }

    /// The pod named by `CNI_ARGS`, when the runtime is a Kubernetes one (both name and namespace given).
    pub fn pod(&self) -> Option<PodRef> {
        let get = |k| {
            self.args
                .get(k)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Some(PodRef {
            namespace: get("K8S_POD_NAMESPACE")?,
            name: get("K8S_POD_NAME")?,
            uid: get("K8S_POD_UID"),
            infra_container_id: get("K8S_POD_INFRA_CONTAINER_ID"),
        })
    }

    /// Who a message is about: the pod when known, otherwise the container.
    pub fn who(&self) -> String {
        match self.pod() {
            Some(pod) => pod.to_string(),
            None => match &self.container_id {
                Some(id) => format!("container {id}"),
                None => "plexus".to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<CniEnv>, RequestError> {
        CniEnv::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn no_command_means_about() {
        assert!(env(&[("PATH", "/bin")]).unwrap().is_none());
    }

    /// Hostile input (issue 6): `cli` reads the environment lossily, so bytes that are not UTF-8 arrive
    /// as U+FFFD; a protocol variable holding one is refused (code 4) rather than acted on altered.
    #[test]
    fn non_utf8_cni_variables_are_refused_naming_the_variable() {
        let good = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=a"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        assert!(env(&good).unwrap().is_some());
        let bad = String::from_utf8_lossy(b"x\xffy").into_owned();
        for var in [
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
        ] {
            let vars: Vec<(&str, &str)> = good
                .iter()
                .map(|&(k, v)| if k == var { (k, bad.as_str()) } else { (k, v) })
                .collect();
            let e = env(&vars).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid {var}: it is not valid UTF-8")),
                "{e}"
            );
        }
        // Other variables pass through as read (they are not plexus's to judge).
        let mut vars = good.to_vec();
        vars.push(("OTHER", bad.as_str()));
        assert_eq!(env(&vars).unwrap().unwrap().passthrough["OTHER"], bad);
    }

    #[test]
    fn unknown_command_is_refused_with_its_name() {
        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert_eq!(e.to_string(), "unknown CNI_COMMAND: FROB");
    }

    #[test]
    fn add_requires_container_netns_ifname_cni_8() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing"
        );
    }

    #[test]
    fn del_does_not_require_netns_cni_17() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(e.command, Command::Del);
        assert!(e.netns.is_none());
    }

    #[test]
    fn version_status_gc_need_nothing_else() {
        for c in ["VERSION", "STATUS", "GC"] {
            assert!(env(&[("CNI_COMMAND", c)]).unwrap().is_some(), "{c}");
        }
    }

    #[test]
    fn invalid_container_id_and_ifname_are_named_cni_53() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CNI_CONTAINERID"), "{e}");
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "a/b"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CNI_IFNAME"), "{e}");
    }

    #[test]
    fn pod_and_passthrough() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a:/b::"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1",
            ),
            ("HOME", "/root"),
        ])
        .unwrap()
        .unwrap();
        let pod = e.pod().unwrap();
        assert_eq!(pod.to_string(), "ns/p/u1");
        assert_eq!(e.who(), "ns/p/u1");
        assert_eq!(e.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(e.passthrough.get("HOME").map(String::as_str), Some("/root"));
        assert!(!e.passthrough.contains_key("CNI_ARGS"));
    }

    #[test]
    fn no_pod_without_k8s_keys() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c9"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap()
        .unwrap();
        assert!(e.pod().is_none());
        assert_eq!(e.who(), "container c9");
    }
}
