//! Label and field selectors, as `labelSelector=` / `fieldSelector=` query parameters.

use serde_json::{Map, Value};

use super::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, Op)>);

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn bad(sel: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {sel:?}"))
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(sel: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if sel.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_top(sel) {
            let t = term.trim();
            let req = if let Some(key) = t.strip_prefix('!') {
                (key.trim().to_string(), Op::NotExists)
            } else if let Some(open) = t.find('(') {
                let close = t.rfind(')').filter(|c| *c > open).ok_or_else(|| bad(t))?;
                let mut head = t[..open].split_whitespace();
                let (key, op) = (head.next().ok_or_else(|| bad(t))?, head.next());
                let values: Vec<String> = t[open + 1..close]
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                let op = match op {
                    Some("in") => Op::In(values),
                    Some("notin") => Op::NotIn(values),
                    _ => return Err(bad(t)),
                };
                (key.to_string(), op)
            } else if let Some((k, v)) = t.split_once("!=") {
                (k.trim().to_string(), Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = t.split_once("==") {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = t.split_once('=') {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else {
                (t.to_string(), Op::Exists)
            };
            if !valid_key(&req.0) {
                return Err(bad(t));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether `labels` (an object's `metadata.labels`) satisfy the selector.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(k, op)| match op {
            Op::Eq(v) => get(k) == Some(v.as_str()),
            Op::NotEq(v) => get(k) != Some(v.as_str()),
            Op::In(vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Op::Exists => get(k).is_some(),
            Op::NotExists => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-joined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the selector, allowing only the fields in `supported` (as the real server does).
    pub fn parse(sel: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in sel.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{sel}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// The fields the selector names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(f, _, _)| f.as_str())
    }

    /// Whether the object matches; `value_of` gives a field's value as the server compares it.
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.0.iter().all(|(f, eq, v)| (value_of(f) == *v) == *eq)
    }
}

/// A field of `obj` by dotted path, as a selector compares it: strings as-is,
/// booleans and numbers printed, missing as "".
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(_) | Value::Array(_) => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn label_selectors() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("tier in (back, front)"));
        assert!(!m("tier notin (front)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("missing notin (x)"));
        assert!(!m("missing in (x)"));
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
        assert!(!LabelSelector::parse("app=web").unwrap().matches(None));
    }

    #[test]
    fn field_selectors() {
        let pod =
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": true}});
        let sel = FieldSelector::parse(
            "metadata.name=p,spec.nodeName!=n2,spec.hostNetwork=true",
            &["metadata.name", "spec.nodeName", "spec.hostNetwork"],
        )
        .unwrap();
        assert!(sel.matches(|f| field_value(&pod, f)));
        let err = FieldSelector::parse("spec.foo=x", &["metadata.name"]).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.foo");
        assert_eq!(field_value(&pod, "spec.missing"), "");
    }
}
