//! `CNI_ARGS` parsing and rendering: ordered `K=V;K2=V2` pairs (CNI-49, CNI-51).

use std::fmt;
use std::str::FromStr;

/// Errors from parsing `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A non-empty segment has no `=`.
    #[error("CNI_ARGS segment {0:?} has no '='; each segment must be KEY=VALUE")]
    MissingEquals(String),
    /// A segment has an empty key, e.g. `=value`.
    #[error(
        "CNI_ARGS segment {0:?} has an empty key; each segment must be KEY=VALUE with a non-empty KEY"
    )]
    EmptyKey(String),
}

/// `CNI_ARGS` as ordered key/value pairs.
///
/// Parsing follows Multus (CNI-51): split on `;`, then each segment on its first
/// `=`, so values may contain `=`. Duplicate keys are kept as given; [`CniArgs::get`]
/// returns the last one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// An empty set of arguments.
    pub fn new() -> CniArgs {
        CniArgs::default()
    }

    /// Parse a `CNI_ARGS` value. An empty string gives no pairs; empty segments
    /// (`a=1;;b=2`, trailing `;`) are skipped.
    pub fn parse(s: &str) -> Result<CniArgs, ArgsError> {
        let mut pairs = Vec::new();
        for segment in s.split(';').filter(|seg| !seg.is_empty()) {
            let (key, value) = segment
                .split_once('=')
                .ok_or_else(|| ArgsError::MissingEquals(segment.to_owned()))?;
            if key.is_empty() {
                return Err(ArgsError::EmptyKey(segment.to_owned()));
            }
            pairs.push((key.to_owned(), value.to_owned()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key`; the last occurrence wins.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Set `key`: replace the value at its first position and drop later
    /// duplicates, or append when absent.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.pairs.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                self.pairs[first].1 = value;
                let mut index = 0;
                self.pairs.retain(|(k, _)| {
                    let keep = index <= first || *k != key;
                    index += 1;
                    keep
                });
            }
            None => self.pairs.push((key, value)),
        }
    }

    /// Remove every occurrence of `key`.
    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// The pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Iterate over `(key, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs, duplicates included.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// CNI-51: `IgnoreUnknown` is `1` or `true` (case-insensitive).
    pub fn ignore_unknown(&self) -> bool {
        self.get("IgnoreUnknown")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// Render as `K=V;K2=V2` (empty string when empty).
    pub fn to_env_string(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    }
}

impl fmt::Display for CniArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_env_string())
    }
}

impl FromStr for CniArgs {
    type Err = ArgsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniArgs::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_style_args_cni_51() {
        let s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1";
        let a = CniArgs::parse(s).unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.get("K8S_POD_UID"), Some("u-1"));
        assert_eq!(a.get("missing"), None);
        assert!(a.ignore_unknown());
        assert_eq!(a.to_env_string(), s);
    }

    #[test]
    fn values_may_contain_equals() {
        let a = CniArgs::parse("K=a=b=c;X=").unwrap();
        assert_eq!(a.get("K"), Some("a=b=c"));
        assert_eq!(a.get("X"), Some(""));
        assert_eq!(a.to_env_string(), "K=a=b=c;X=");
    }

    #[test]
    fn empty_input_and_empty_segments() {
        assert!(CniArgs::parse("").unwrap().is_empty());
        assert!(CniArgs::parse(";;").unwrap().is_empty());
        let a = CniArgs::parse("A=1;;B=2;").unwrap();
        assert_eq!(
            a.pairs(),
            &[
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "2".to_owned())
            ]
        );
    }

    #[test]
    fn segment_without_equals_is_an_error_naming_it() {
        let err = CniArgs::parse("A=1;bogus;B=2").unwrap_err();
        assert_eq!(err, ArgsError::MissingEquals("bogus".into()));
        assert!(err.to_string().contains(r#""bogus""#));
        assert_eq!(
            CniArgs::parse("=v").unwrap_err(),
            ArgsError::EmptyKey("=v".into())
        );
    }

    #[test]
    fn last_occurrence_wins_for_get() {
        let a = CniArgs::parse("K=1;J=x;K=2").unwrap();
        assert_eq!(a.get("K"), Some("2"));
    }

    #[test]
    fn set_replaces_in_place_and_drops_duplicates() {
        let mut a = CniArgs::parse("K=1;J=x;K=2;L=y").unwrap();
        a.set("K", "3");
        assert_eq!(a.to_env_string(), "K=3;J=x;L=y");
        a.set("M", "new");
        assert_eq!(a.to_env_string(), "K=3;J=x;L=y;M=new");
        a.remove("J");
        assert_eq!(a.to_env_string(), "K=3;L=y;M=new");
        a.remove("absent");
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn ignore_unknown_values() {
        for (s, want) in [
            ("IgnoreUnknown=TRUE", true),
            ("IgnoreUnknown=true", true),
            ("IgnoreUnknown=1", true),
            ("IgnoreUnknown=0", false),
            ("IgnoreUnknown=yes", false),
            ("A=B", false),
        ] {
            assert_eq!(CniArgs::parse(s).unwrap().ignore_unknown(), want, "{s}");
        }
    }

    #[test]
    fn iter_display_and_from_str() {
        let a: CniArgs = "A=1;B=2".parse().unwrap();
        let v: Vec<_> = a.iter().collect();
        assert_eq!(v, [("A", "1"), ("B", "2")]);
        assert_eq!(a.to_string(), "A=1;B=2");
        assert_eq!(CniArgs::new().to_env_string(), "");
    }
}
