//! CNI specification versions: parsing, ordering, feature gates and negotiation (CNI-2, CNI-21, CNI-40, CNI-41, CNI-42).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors from parsing a CNI version string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The string is not one of the seven versions of CNI-42.
    #[error("unsupported CNI version {0:?}")]
    Unsupported(String),
}

/// A CNI specification version this crate understands (CNI-42 `version.All`).
///
/// The derived ordering is the spec's release order, so `v >= CniVersion::V0_4_0`
/// reads as "at least 0.4.0".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CniVersion {
    /// 0.1.0: ADD and DEL; legacy `ip4`/`ip6` result.
    V0_1_0,
    /// 0.2.0: adds VERSION; result shape as 0.1.0.
    V0_2_0,
    /// 0.3.0: rich result, lists, chaining, `prevResult`.
    V0_3_0,
    /// 0.3.1: fixes the `ip` → `ips` field name.
    V0_3_1,
    /// 0.4.0: CHECK, `prevResult` on DEL, error codes 1, 2, 3, 11.
    V0_4_0,
    /// 1.0.0: `ips[].version` removed, error codes 4 to 7.
    V1_0_0,
    /// 1.1.0: GC, STATUS, extra interface and route fields.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, in ascending order (CNI-42).
    pub const ALL: [CniVersion; 7] = [
        CniVersion::V0_1_0,
        CniVersion::V0_2_0,
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The highest version this crate speaks.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The canonical version string, e.g. `"0.3.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_1_0 => "0.1.0",
            CniVersion::V0_2_0 => "0.2.0",
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parse a config's `cniVersion`: absent or empty means 0.1.0 (CNI-40).
    pub fn from_config_str(s: Option<&str>) -> Result<CniVersion, VersionError> {
        match s {
            None | Some("") => Ok(CniVersion::V0_1_0),
            Some(v) => v.parse(),
        }
    }

    /// CHECK exists from 0.4.0 (CNI-41).
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// GC exists from 1.1.0 (CNI-22, CNI-41).
    pub fn has_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// STATUS exists from 1.1.0 (CNI-20, CNI-41).
    pub fn has_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// Lists, chaining and `prevResult` exist from 0.3.0 (B.0).
    pub fn has_chaining(self) -> bool {
        self >= CniVersion::V0_3_0
    }

    /// DEL receives `prevResult` from 0.4.0 (B.0, CNI-45).
    pub fn has_prev_result_on_del(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// The VERSION command exists from 0.2.0 (B.0, CNI-21).
    pub fn has_version_command(self) -> bool {
        self >= CniVersion::V0_2_0
    }

    /// Results use the rich `interfaces`/`ips`/`routes` shape from 0.3.0 (CNI-36).
    pub fn has_rich_result(self) -> bool {
        self >= CniVersion::V0_3_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = VersionError;

    /// Exact match against the seven version strings; no trimming, no prefixes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| VersionError::Unsupported(s.to_owned()))
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// CNI-2: the highest of `candidates` that this crate supports.
///
/// Unknown strings (including versions newer than 1.1.0) are skipped, as libcni
/// skips entries above its own version. `None` when nothing is supported.
pub fn highest_supported(candidates: &[&str]) -> Option<CniVersion> {
    candidates
        .iter()
        .filter_map(|s| s.parse::<CniVersion>().ok())
        .max()
}

/// CNI-21: the VERSION reply, echoing the `cniVersion` that came in on stdin.
pub fn supported_versions_json(echo: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": echo,
        "supportedVersions": CniVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

/// CNI-21: the whole VERSION reply for a plugin's stdin: the supported versions, echoing the config's
/// `cniVersion` (1.1.0 when it has none, or stdin is not a config: VERSION needs no valid config).
pub fn version_reply(stdin: &[u8]) -> Vec<u8> {
    let echo = declared_version(stdin)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| CniVersion::V1_1_0.as_str().to_string());
    serde_json::to_vec(&supported_versions_json(&echo)).unwrap_or_default()
}

/// The `cniVersion` string a plugin's stdin declares, as written (not validated), when it is a JSON object
/// with one: what an error reply for a config that does not validate echoes.
pub fn declared_version(stdin: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()?
        .get("cniVersion")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip_every_version() {
        let strings = [
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
        ];
        for (v, s) in CniVersion::ALL.iter().zip(strings) {
            assert_eq!(v.as_str(), s);
            assert_eq!(v.to_string(), s);
            assert_eq!(s.parse::<CniVersion>(), Ok(*v));
        }
    }

    #[test]
    fn unknown_and_sloppy_strings_are_rejected() {
        for bad in ["9.9.9", "", "1.1", " 1.1.0", "1.1.0 ", "v1.0.0", "0.3"] {
            assert_eq!(
                bad.parse::<CniVersion>(),
                Err(VersionError::Unsupported(bad.to_owned())),
                "{bad:?}"
            );
        }
        let err = "9.9.9".parse::<CniVersion>().unwrap_err();
        assert_eq!(err.to_string(), r#"unsupported CNI version "9.9.9""#);
    }

    #[test]
    fn ordering_follows_spec_order() {
        let mut sorted = CniVersion::ALL;
        sorted.sort();
        assert_eq!(sorted, CniVersion::ALL);
        assert!(CniVersion::V0_3_1 > CniVersion::V0_3_0);
        assert!(CniVersion::V1_0_0 > CniVersion::V0_4_0);
        assert_eq!(CniVersion::LATEST, CniVersion::V1_1_0);
    }

    #[test]
    fn missing_or_empty_config_version_is_0_1_0_cni_40() {
        assert_eq!(CniVersion::from_config_str(None), Ok(CniVersion::V0_1_0));
        assert_eq!(
            CniVersion::from_config_str(Some("")),
            Ok(CniVersion::V0_1_0)
        );
        assert_eq!(
            CniVersion::from_config_str(Some("0.4.0")),
            Ok(CniVersion::V0_4_0)
        );
        assert!(CniVersion::from_config_str(Some("2.0.0")).is_err());
    }

    #[test]
    fn feature_predicates_cni_41() {
        use CniVersion::*;
        let check: Vec<_> = CniVersion::ALL
            .into_iter()
            .filter(|v| v.has_check())
            .collect();
        assert_eq!(check, [V0_4_0, V1_0_0, V1_1_0]);
        let gc: Vec<_> = CniVersion::ALL.into_iter().filter(|v| v.has_gc()).collect();
        assert_eq!(gc, [V1_1_0]);
        let status: Vec<_> = CniVersion::ALL
            .into_iter()
            .filter(|v| v.has_status())
            .collect();
        assert_eq!(status, [V1_1_0]);
        let chain: Vec<_> = CniVersion::ALL
            .into_iter()
            .filter(|v| v.has_chaining())
            .collect();
        assert_eq!(chain, [V0_3_0, V0_3_1, V0_4_0, V1_0_0, V1_1_0]);
        assert!(!V0_3_1.has_prev_result_on_del());
        assert!(V0_4_0.has_prev_result_on_del());
        assert!(!V0_1_0.has_version_command());
        assert!(V0_2_0.has_version_command());
        assert!(!V0_2_0.has_rich_result());
        assert!(V0_3_0.has_rich_result());
    }

    #[test]
    fn highest_supported_skips_unknown_cni_2() {
        assert_eq!(
            highest_supported(&["0.3.1", "1.0.0", "0.4.0"]),
            Some(CniVersion::V1_0_0)
        );
        assert_eq!(
            highest_supported(&["0.4.0", "2.0.0", "1.2.0", "garbage"]),
            Some(CniVersion::V0_4_0)
        );
        assert_eq!(highest_supported(&["5.0.0"]), None);
        assert_eq!(highest_supported(&[]), None);
    }

    #[test]
    fn version_reply_echoes_input_cni_21() {
        let v = supported_versions_json("0.3.1");
        assert_eq!(v["cniVersion"], "0.3.1");
        let list: Vec<&str> = v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(
            list,
            [
                "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
            ]
        );
        assert_eq!(
            v.to_string(),
            r#"{"cniVersion":"0.3.1","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let s = serde_json::to_string(&CniVersion::V0_3_1).unwrap();
        assert_eq!(s, r#""0.3.1""#);
        let v: CniVersion = serde_json::from_str(r#""1.0.0""#).unwrap();
        assert_eq!(v, CniVersion::V1_0_0);
        let err = serde_json::from_str::<CniVersion>(r#""7.0.0""#).unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"unsupported CNI version "7.0.0""#)
        );
        assert!(serde_json::from_str::<CniVersion>("100").is_err());
    }
}
