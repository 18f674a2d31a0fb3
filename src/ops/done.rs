//! What a successful operation hands its edge: the typed reply (ADD's result in a known version, the VERSION
//! answer, or nothing) that the thin binary prints and the daemon puts on its socket, each rendering it
//! its own way, and the work left for after the reply, as values the edge schedules.

use plexus_cni::{CniResult, CniVersion, result::ResultError};
use serde_json::Value;

use crate::seams::cluster::DeferredStatus;

/// Work an operation leaves for after its reply (daemon mode), for the edge to run off the request's
/// thread (the daemon's after-reply thread): ADD's durable writes, holding the container's lock until they
/// end (they run when the job is called or dropped); DEL's unlinks of the files it moved into the trash
/// (also done when dropped).
pub type AfterReply = Box<dyn FnOnce() + Send>;

/// A successful operation.
pub struct Done {
    /// What the operation answers.
    pub reply: Reply,
    /// Daemon mode (`Seams::defer_work`): the work left for after the reply.
    pub after_reply: Option<AfterReply>,
    /// Daemon mode with `statusWrite: afterReply`: ADD's network-status write, to send after the reply.
    pub status: Option<Box<DeferredStatus>>,
}

impl Done {
    /// A success with nothing to print (DEL, CHECK, STATUS, GC) and nothing left to do.
    pub fn empty() -> Done {
        Done::answer(Reply::Empty)
    }

    /// A success answering `reply`, with nothing left to do.
    pub fn answer(reply: Reply) -> Done {
        Done {
            reply,
            after_reply: None,
            status: None,
        }
    }
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("reply", &self.reply)
            .field("after_reply", &self.after_reply.is_some())
            .field("status", &self.status)
            .finish()
    }
}

/// What a successful operation answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// DEL, CHECK, STATUS, GC: nothing.
    Empty,
    /// ADD: the cluster network's result, in the config's version.
    Added(Box<Versioned>),
    /// VERSION: the version reply, as `plexus_cni::version` renders it.
    Version(Vec<u8>),
}

impl Reply {
    /// What the thin binary prints on stdout.
    pub fn to_stdout(&self) -> Vec<u8> {
        match self {
            Reply::Empty => Vec::new(),
            Reply::Added(v) => v.rendered.to_string().into_bytes(),
            Reply::Version(bytes) => bytes.clone(),
        }
    }
}

/// A CNI result with the version it is given in. Made only when it renders in that version, so an edge
/// can always render it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    result: CniResult,
    version: CniVersion,
    /// `result` rendered in `version` (what the runtime reads).
    rendered: Value,
}

impl Versioned {
    /// `result` given in `version`; fails when it cannot be rendered in that version (a 0.2.0 result
    /// needs an address).
    pub fn new(result: CniResult, version: CniVersion) -> Result<Versioned, ResultError> {
        let rendered = result.to_value(version)?;
        Ok(Versioned {
            result,
            version,
            rendered,
        })
    }

    /// The result.
    pub fn result(&self) -> &CniResult {
        &self.result
    }

    /// The version it is given in.
    pub fn version(&self) -> CniVersion {
        self.version
    }

    /// The result as the runtime reads it, rendered in [`Versioned::version`].
    pub fn rendered(&self) -> &Value {
        &self.rendered
    }

    /// The result in `floor` or a later version: given in a version from `floor` on, as rendered;
    /// otherwise what the runtime reads, converted up to `floor` (so it holds what the runtime would have:
    /// a 0.2.0 result keeps only its first address of each family).
    pub fn at_least(&self, floor: CniVersion) -> Result<Value, ResultError> {
        if self.version >= floor {
            return Ok(self.rendered.clone());
        }
        CniResult::from_value(&self.rendered, floor)?.to_value(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(json: &str) -> CniResult {
        CniResult::parse(json.as_bytes(), CniVersion::V1_0_0).unwrap()
    }

    /// The reply prints as the result rendered in its version, byte for byte what `to_json` gives.
    #[test]
    fn an_added_reply_prints_the_result_in_its_version() {
        let r = result(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/p"}],"ips":[{"address":"10.1.0.5/16","interface":0}]}"#,
        );
        for v in [CniVersion::V0_3_1, CniVersion::V0_4_0, CniVersion::V1_1_0] {
            let reply = Reply::Added(Box::new(Versioned::new(r.clone(), v).unwrap()));
            assert_eq!(reply.to_stdout(), r.to_json(v).unwrap().into_bytes(), "{v}");
        }
        assert!(Reply::Empty.to_stdout().is_empty());
        assert_eq!(Reply::Version(b"{}".to_vec()).to_stdout(), b"{}");
    }

    /// A result that cannot be given in the version is refused when made, not when rendered.
    #[test]
    fn a_result_that_cannot_be_rendered_is_refused_up_front() {
        let no_ips = result(r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}]}"#);
        assert!(matches!(
            Versioned::new(no_ips, CniVersion::V0_2_0),
            Err(ResultError::NoIpAddresses)
        ));
    }

    /// Up to a floor: a later version as rendered; an earlier one as the runtime would read it, converted.
    #[test]
    fn at_least_keeps_a_later_version_and_converts_an_earlier_one_as_read() {
        let r = result(
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":1400}],"ips":[{"address":"10.1.0.5/16","interface":0},{"address":"10.2.0.5/16","interface":0}]}"#,
        );
        let v = Versioned::new(r.clone(), CniVersion::V1_1_0).unwrap();
        let up = v.at_least(CniVersion::V1_0_0).unwrap();
        assert_eq!(up, r.to_value(CniVersion::V1_1_0).unwrap());
        assert_eq!(up["interfaces"][0]["mtu"], 1400);
        // 0.2.0 keeps one address of each family and no interfaces: so does the converted result.
        let v = Versioned::new(r, CniVersion::V0_2_0).unwrap();
        let up = v.at_least(CniVersion::V1_0_0).unwrap();
        assert_eq!(up["cniVersion"], "1.0.0");
        assert_eq!(up["ips"].as_array().unwrap().len(), 1);
        assert!(up.get("interfaces").is_none());
    }
}
