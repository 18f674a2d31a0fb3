//! Kubernetes object name rules (DNS-1123 labels and subdomains), pure: the config's `multusNamespace` and
//! the names in a pod's annotations are checked against them before they can become API paths (NPWG-9).

const LABEL_RULE: &str = "a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit";
const SUBDOMAIN_RULE: &str = "a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit";

fn is_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// NPWG-9: a namespace is a DNS-1123 label.
pub fn check_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "{} is {} characters long; it must be {LABEL_RULE}",
            quoted(s),
            s.len()
        ));
    }
    if !is_label_part(s) {
        return Err(format!("{} is not {LABEL_RULE}", quoted(s)));
    }
    Ok(())
}

/// NPWG-9, widened as Go Multus accepts: a name is a DNS-1123 subdomain.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!(
            "{} is {} characters long; it must be {SUBDOMAIN_RULE}",
            quoted(s),
            s.len()
        ));
    }
    if !s.split('.').all(is_label_part) {
        return Err(format!("{} is not {SUBDOMAIN_RULE}", quoted(s)));
    }
    Ok(())
}

/// Whether `s` is a DNS-1123 subdomain, i.e. a name a NAD can have (NPWG-9). Lookups of other names
/// (`..`, `a?b`) must not reach the API, where they would be URL paths.
pub fn is_dns_subdomain(s: &str) -> bool {
    check_subdomain(s).is_ok()
}

/// Why `s` is not a DNS-1123 label (a namespace name, NPWG-9), with the rule; `None` when it is one.
pub fn label_error(s: &str) -> Option<String> {
    check_label(s).err()
}

/// A string for a message: quoted, cut at 64 characters (hostile input must not come back whole).
fn quoted(s: &str) -> String {
    let q = serde_json::Value::from(s).to_string();
    match q.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &q[..at]),
        None => q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_a_label() {
        assert_eq!(label_error("kube-system"), None);
        assert_eq!(label_error(&"a".repeat(63)), None);
        let long = label_error(&"a".repeat(64)).unwrap();
        assert!(long.contains("is 64 characters long"), "{long}");
        assert!(long.contains("…"), "the value is cut: {long}");
        for bad in ["", "Kube", "a.b", "-a", "a-", "a_b"] {
            let why = label_error(bad).unwrap();
            assert!(why.contains("is not a DNS-1123 label"), "{bad:?}: {why}");
        }
    }

    #[test]
    fn a_name_is_a_subdomain() {
        assert!(is_dns_subdomain("macvlan-net"));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(is_dns_subdomain(&"a".repeat(253)));
        for bad in ["", "..", "a..b", "a?b", "A", ".a", "a.", "-a.b"] {
            assert!(!is_dns_subdomain(bad), "{bad:?}");
        }
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        assert!(
            check_subdomain("a?b")
                .unwrap_err()
                .contains("\"a?b\" is not a DNS-1123 subdomain")
        );
    }
}
