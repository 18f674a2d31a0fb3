//! Validation of CNI identifiers: container IDs, network names, interface names and plugin types (CNI-3, CNI-52, CNI-53).

use std::fmt;

use crate::error::codes;

/// The longest interface name Linux accepts, in bytes (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// What was being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `CNI_CONTAINERID`.
    ContainerId,
    /// A network config `name`.
    NetworkName,
    /// `CNI_IFNAME`.
    InterfaceName,
    /// A plugin `type` (or `ipam.type`).
    PluginType,
}

impl Subject {
    fn rule(self) -> &'static str {
        match self {
            Subject::ContainerId | Subject::NetworkName => {
                "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ (a letter or digit, then letters, digits, '_', '.' or '-')"
            }
            Subject::InterfaceName => {
                "it must be 1 to 15 bytes, not \".\" or \"..\", without '/', ':' or whitespace"
            }
            Subject::PluginType => "it must be the plain file name of a plugin binary",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::ContainerId => "container ID",
            Subject::NetworkName => "network name",
            Subject::InterfaceName => "interface name",
            Subject::PluginType => "plugin type",
        })
    }
}

/// A rejected identifier; the message names the value and states what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The value is empty.
    #[error("{subject} is empty; {rule}", rule = subject.rule())]
    Empty {
        /// What was validated.
        subject: Subject,
    },
    /// The value breaks a rule.
    #[error("{subject} {} is invalid: {reason}; {rule}", shown(value), rule = subject.rule())]
    Invalid {
        /// What was validated.
        subject: Subject,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The interface name is longer than [`MAX_INTERFACE_NAME_LEN`] bytes.
    #[error(
        "interface name {} is {len} bytes; at most 15 are allowed",
        shown(name)
    )]
    InterfaceNameTooLong {
        /// The rejected name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// The most characters of a rejected value a message quotes: hostile input (a megabyte interface name in
/// an annotation) must not come back whole in errors, logs and events (issue 6, found by the
/// `annotation` fuzz target).
pub const MAX_QUOTED_CHARS: usize = 64;

/// `value` quoted (Rust debug form), cut to [`MAX_QUOTED_CHARS`] characters with `…` when longer.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

impl ValidationError {
    /// What was being validated.
    pub fn subject(&self) -> Subject {
        match self {
            ValidationError::Empty { subject } | ValidationError::Invalid { subject, .. } => {
                *subject
            }
            ValidationError::InterfaceNameTooLong { .. } => Subject::InterfaceName,
        }
    }

    /// The CNI error code libcni and skel use for this failure (CNI-53): 4 for a
    /// container ID or interface name, 7 for a network name or plugin type.
    pub fn cni_code(&self) -> u32 {
        match self.subject() {
            Subject::ContainerId | Subject::InterfaceName => codes::INVALID_ENV,
            Subject::NetworkName | Subject::PluginType => codes::INVALID_NETWORK_CONFIG,
        }
    }
}

fn invalid(subject: Subject, value: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        subject,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// True when `s` matches `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`.
pub fn is_valid_identifier(s: &str) -> bool {
    identifier(Subject::ContainerId, s).is_ok()
}

fn identifier(subject: Subject, s: &str) -> Result<(), ValidationError> {
    let mut chars = s.char_indices();
    match chars.next() {
        None => return Err(ValidationError::Empty { subject }),
        Some((_, c)) if !c.is_ascii_alphanumeric() => {
            return Err(invalid(
                subject,
                s,
                format!("first character {c:?} is not a letter or digit"),
            ));
        }
        Some(_) => {}
    }
    for (i, c) in chars {
        if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(invalid(
                subject,
                s,
                format!("character {c:?} at byte {i} is not allowed"),
            ));
        }
    }
    Ok(())
}

/// CNI-53: a container ID is non-empty and matches `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`.
pub fn container_id(s: &str) -> Result<(), ValidationError> {
    identifier(Subject::ContainerId, s)
}

/// CNI-1, CNI-53: a network name is non-empty and matches `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`.
pub fn network_name(s: &str) -> Result<(), ValidationError> {
    identifier(Subject::NetworkName, s)
}

/// CNI-53: an interface name is 1 to 15 bytes, not `.` or `..`, and has no `/`,
/// `:` or whitespace.
pub fn interface_name(s: &str) -> Result<(), ValidationError> {
    let subject = Subject::InterfaceName;
    if s.is_empty() {
        return Err(ValidationError::Empty { subject });
    }
    if s.len() > MAX_INTERFACE_NAME_LEN {
        return Err(ValidationError::InterfaceNameTooLong {
            name: s.to_owned(),
            len: s.len(),
        });
    }
    if s == "." || s == ".." {
        return Err(invalid(subject, s, "\".\" and \"..\" are reserved"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        return Err(invalid(subject, s, format!("it contains {c:?}")));
    }
    Ok(())
}

/// CNI-3, CNI-52: a plugin `type` must be a plain file name. Refuses path
/// separators (`/`, `\`), NUL, `..` and absolute paths (CVE-2021-20206).
pub fn plugin_type(s: &str) -> Result<(), ValidationError> {
    let subject = Subject::PluginType;
    if s.is_empty() {
        return Err(ValidationError::Empty { subject });
    }
    let bytes = s.as_bytes();
    let drive_absolute = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if s.starts_with('/') || s.starts_with('\\') || drive_absolute {
        return Err(invalid(subject, s, "it is an absolute path"));
    }
    if s.contains('/') {
        return Err(invalid(subject, s, "it contains the path separator '/'"));
    }
    if s.contains('\\') {
        return Err(invalid(subject, s, "it contains the path separator '\\'"));
    }
    if s.contains('\0') {
        return Err(invalid(subject, s, "it contains a NUL byte"));
    }
    if s.contains("..") {
        return Err(invalid(subject, s, "it contains \"..\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression, fuzz target `annotation` (issue 6): an interface name of thousands of control
    /// characters came back whole (escaped, six times its size) in the error, the log and the event.
    #[test]
    fn messages_quote_at_most_64_characters_of_a_value() {
        let long = "\u{1a}".repeat(100_000);
        for e in [
            interface_name(&long).unwrap_err(),
            plugin_type(&format!("/{long}")).unwrap_err(),
            container_id(&format!("-{long}")).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(msg.len() < 700, "{} bytes: {msg:.200}", msg.len());
            assert!(msg.contains('…'), "{msg}");
        }
        assert!(
            interface_name(&long)
                .unwrap_err()
                .to_string()
                .ends_with("is 100000 bytes; at most 15 are allowed")
        );
        // Short values are quoted whole.
        assert_eq!(shown("eth0/x"), "\"eth0/x\"");
        assert_eq!(shown(&"é".repeat(64)), format!("{:?}", "é".repeat(64)));
        assert_eq!(shown(&"é".repeat(65)), format!("{:?}…", "é".repeat(64)));
    }

    #[test]
    fn container_ids_cni_53() {
        for ok in ["a", "0", "abc123", "A.b_c-d", "9f8e7d6c5b4a"] {
            assert_eq!(container_id(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            container_id(""),
            Err(ValidationError::Empty {
                subject: Subject::ContainerId
            })
        );
        for bad in ["-abc", "_abc", ".abc", "ab c", "ab/c", "ab:c", "é", "abcé"] {
            assert!(container_id(bad).is_err(), "{bad}");
        }
        let err = container_id("ab!c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "container ID \"ab!c\" is invalid: character '!' at byte 2 is not allowed; it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ (a letter or digit, then letters, digits, '_', '.' or '-')"
        );
        assert_eq!(err.cni_code(), 4);
        assert!(is_valid_identifier("x1"));
        assert!(!is_valid_identifier("-x1"));
    }

    #[test]
    fn network_names_cni_1() {
        assert_eq!(network_name("macvlan-conf.v1"), Ok(()));
        let err = network_name("../etc").unwrap_err();
        assert_eq!(err.subject(), Subject::NetworkName);
        assert!(
            err.to_string()
                .starts_with("network name \"../etc\" is invalid: first character '.'")
        );
        assert_eq!(err.cni_code(), 7);
        assert!(
            network_name("")
                .unwrap_err()
                .to_string()
                .starts_with("network name is empty; it must match")
        );
    }

    #[test]
    fn interface_names_cni_53() {
        for ok in ["eth0", "net1", "a", "eth0eth0eth0eth", "vlan.100", "é"] {
            assert_eq!(interface_name(ok), Ok(()), "{ok}");
        }
        let err = interface_name("eth0eth0eth0eth0x").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"interface name "eth0eth0eth0eth0x" is 17 bytes; at most 15 are allowed"#
        );
        assert_eq!(err.cni_code(), 4);
        // Length counts bytes, not characters: 8 two-byte characters are 16 bytes.
        assert!(matches!(
            interface_name("éééééééé"),
            Err(ValidationError::InterfaceNameTooLong { len: 16, .. })
        ));
        for bad in [".", "..", "a/b", "a:b", "a b", "a\tb", "a\nb"] {
            assert!(
                matches!(interface_name(bad), Err(ValidationError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            interface_name("a:b").unwrap_err().to_string(),
            "interface name \"a:b\" is invalid: it contains ':'; it must be 1 to 15 bytes, not \".\" or \"..\", without '/', ':' or whitespace"
        );
        assert!(matches!(
            interface_name(""),
            Err(ValidationError::Empty {
                subject: Subject::InterfaceName
            })
        ));
    }

    #[test]
    fn plugin_types_cni_52() {
        for ok in ["macvlan", "host-local", "bridge_v2", "a.b", "sriov.exe"] {
            assert_eq!(plugin_type(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("/usr/bin/bridge", "it is an absolute path"),
            ("\\bridge", "it is an absolute path"),
            ("C:bridge", "it is an absolute path"),
            ("sub/bridge", "it contains the path separator '/'"),
            ("sub\\bridge", "it contains the path separator '\\'"),
            ("bri\0dge", "it contains a NUL byte"),
            ("..", "it contains \"..\""),
            ("bridge..x", "it contains \"..\""),
        ];
        for (value, reason) in cases {
            let err = plugin_type(value).unwrap_err();
            assert_eq!(
                err,
                ValidationError::Invalid {
                    subject: Subject::PluginType,
                    value: value.to_owned(),
                    reason: reason.to_owned()
                },
                "{value:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("{value:?}")), "{msg}");
            assert!(msg.contains(reason), "{msg}");
        }
        assert_eq!(
            plugin_type("").unwrap_err().to_string(),
            "plugin type is empty; it must be the plain file name of a plugin binary"
        );
    }
}
