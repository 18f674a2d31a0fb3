//! The validation a real apiserver applies to DRA ResourceClaims (`resource.k8s.io/v1`) and to the pod
//! fields naming them (`spec.resourceClaims`, `status.resourceClaimStatuses`), so that the stand-in answers
//! 422 Invalid where a real server does, with the same field paths and messages (Kubernetes'
//! `pkg/apis/resource/validation` and the pod's claim checks in `pkg/apis/core/validation`).
//!
//! Covered: the claim's requests (names, duplicates, `exactly` xor `firstAvailable`, device class names,
//! allocation mode and count, with the server's defaults applied first), the request names its constraints
//! and configs refer to, an immutable spec, and on `/status` the allocation results (each `request` names a
//! request of the claim, or `request/subrequest` for `firstAvailable`; valid `driver`, `pool`, `device`),
//! an allocation that cannot change once set, and `reservedFor`. Not covered: CEL selectors,
//! `status.devices`, tolerations, capacity and the feature-gated fields.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::resource::v1 as dra;
use serde_json::{Value, json};

use super::error::ApiError;

/// `(field path, message)` pairs, as [`ApiError::invalid`] takes them.
pub type Causes = Vec<(String, String)>;

/// At most this many requests in a claim (`DeviceRequestsMaxSize`).
const MAX_REQUESTS: usize = 32;
/// At most this many allocation results (`AllocationResultsMaxSize`).
const MAX_RESULTS: usize = 32;
/// The longest driver name (`DriverNameMaxLength`).
const MAX_DRIVER: usize = 63;
/// The longest pool name (`PoolNameMaxLength`).
const MAX_POOL: usize = 253;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
    or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex \
    used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
    characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
    regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const REQUEST_REF_MSG: &str = "must be the name of a request in the claim or the name of a request and a \
    subrequest separated by '/'";

/// A string as Go's `%q` prints it in a field error (`"nic"`).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn invalid(c: &mut Causes, field: &str, value: &str, msg: &str) {
    c.push((
        field.into(),
        format!("Invalid value: {}: {msg}", quoted(value)),
    ));
}

fn required(c: &mut Causes, field: &str, detail: &str) {
    let msg = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    c.push((field.into(), msg));
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `ValidateDNS1123Label`: an empty value is invalid, not "required".
fn dns_label(c: &mut Causes, field: &str, value: &str) {
    if value.len() > 63 {
        invalid(c, field, value, "must be no more than 63 characters");
    }
    if !label_ok(value) {
        invalid(c, field, value, LABEL_MSG);
    }
}

/// What `IsDNS1123Subdomain` says of `value`.
fn subdomain_details(value: &str) -> Vec<&'static str> {
    let mut d = Vec::new();
    if value.len() > 253 {
        d.push("must be no more than 253 characters");
    }
    if !value.split('.').all(label_ok) {
        d.push(SUBDOMAIN_MSG);
    }
    d
}

/// `ValidateDNS1123Subdomain`.
fn dns_subdomain(c: &mut Causes, field: &str, value: &str) {
    for msg in subdomain_details(value) {
        invalid(c, field, value, msg);
    }
}

/// A driver name (as a CSI driver's): required, at most 63 bytes, a DNS subdomain ignoring case.
fn driver_name(c: &mut Causes, field: &str, value: &str) {
    if value.is_empty() {
        required(c, field, "");
    }
    if value.len() > MAX_DRIVER {
        c.push((
            field.into(),
            format!("Too long: may not be more than {MAX_DRIVER} bytes"),
        ));
    }
    if !value.to_lowercase().split('.').all(label_ok) {
        invalid(c, field, value, SUBDOMAIN_MSG);
    }
}

/// A pool name: required, at most 253 bytes, DNS subdomains separated by `/`.
fn pool_name(c: &mut Causes, field: &str, value: &str) {
    if value.is_empty() {
        return required(c, field, "");
    }
    if value.len() > MAX_POOL {
        c.push((
            field.into(),
            format!("Too long: may not be more than {MAX_POOL} bytes"),
        ));
    }
    for part in value.split('/') {
        dns_subdomain(c, field, part);
    }
}

fn too_many(c: &mut Causes, field: &str, n: usize, max: usize) {
    c.push((
        field.into(),
        format!("Too many: {n}: must have at most {max} items"),
    ));
}

/// The claim's request names, each with its subrequest names (`firstAvailable`), for references.
type RequestNames = BTreeMap<String, BTreeSet<String>>;

fn request_names(spec: Option<&dra::ResourceClaimSpec>) -> RequestNames {
    requests(spec)
        .iter()
        .map(|r| {
            let subs = r
                .first_available
                .iter()
                .flatten()
                .map(|s| s.name.clone())
                .collect();
            (r.name.clone(), subs)
        })
        .collect()
}

fn requests(spec: Option<&dra::ResourceClaimSpec>) -> &[dra::DeviceRequest] {
    spec.and_then(|s| s.devices.as_ref())
        .and_then(|d| d.requests.as_deref())
        .unwrap_or_default()
}

/// `request` or `request/subrequest`, naming a request of the claim.
fn request_ref(c: &mut Causes, field: &str, name: &str, names: &RequestNames) {
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > 2 {
        return invalid(c, field, name, REQUEST_REF_MSG);
    }
    for s in &segments {
        dns_label(c, field, s);
    }
    let known = match segments.as_slice() {
        [r] => names.contains_key(*r),
        [r, sub] => names.get(*r).is_some_and(|subs| subs.contains(*sub)),
        _ => false,
    };
    if !known {
        invalid(c, field, name, REQUEST_REF_MSG);
    }
}

/// Allocation mode and count, after the defaults (`ExactCount`, 1).
fn allocation_mode(c: &mut Causes, at: &str, mode: Option<&str>, count: Option<i64>) {
    match mode.unwrap_or_default() {
        "All" => {
            if let Some(n) = count.filter(|n| *n != 0) {
                c.push((
                    format!("{at}.count"),
                    format!(
                        "Invalid value: {n}: must not be specified when allocationMode is 'All'"
                    ),
                ));
            }
        }
        "ExactCount" => {
            let n = count.unwrap_or(0);
            if n <= 0 {
                c.push((
                    format!("{at}.count"),
                    format!("Invalid value: {n}: must be greater than zero"),
                ));
            }
        }
        other => c.push((
            format!("{at}.allocationMode"),
            format!(
                "Unsupported value: {}: supported values: \"All\", \"ExactCount\"",
                quoted(other)
            ),
        )),
    }
}

fn device_class(c: &mut Causes, field: &str, name: &str) {
    if name.is_empty() {
        required(c, field, "");
    } else {
        dns_subdomain(c, field, name);
    }
}

fn validate_spec(spec: Option<&dra::ResourceClaimSpec>) -> Causes {
    let mut c = Causes::new();
    let at = "spec.devices";
    let reqs = requests(spec);
    if reqs.len() > MAX_REQUESTS {
        too_many(&mut c, &format!("{at}.requests"), reqs.len(), MAX_REQUESTS);
    }
    let mut seen = BTreeSet::new();
    for (i, r) in reqs.iter().enumerate() {
        let ra = format!("{at}.requests[{i}]");
        dns_label(&mut c, &format!("{ra}.name"), &r.name);
        if !seen.insert(r.name.as_str()) {
            c.push((ra.clone(), format!("Duplicate value: {}", quoted(&r.name))));
        }
        let subs = r.first_available.as_deref().unwrap_or_default();
        match (&r.exactly, subs.is_empty()) {
            (None, true) => required(
                &mut c,
                &ra,
                "exactly one of `exactly` or `firstAvailable` is required",
            ),
            (Some(_), false) => c.push((
                ra.clone(),
                "Invalid value: null: exactly one of `exactly` or `firstAvailable` is required, but \
                 multiple fields are set"
                    .into(),
            )),
            (Some(e), true) => {
                let ea = format!("{ra}.exactly");
                device_class(&mut c, &format!("{ea}.deviceClassName"), &e.device_class_name);
                allocation_mode(&mut c, &ea, e.allocation_mode.as_deref(), e.count);
            }
            (None, false) => {
                let mut sub_seen = BTreeSet::new();
                for (j, s) in subs.iter().enumerate() {
                    let sa = format!("{ra}.firstAvailable[{j}]");
                    dns_label(&mut c, &format!("{sa}.name"), &s.name);
                    if !sub_seen.insert(s.name.as_str()) {
                        c.push((sa.clone(), format!("Duplicate value: {}", quoted(&s.name))));
                    }
                    device_class(&mut c, &format!("{sa}.deviceClassName"), &s.device_class_name);
                    allocation_mode(&mut c, &sa, s.allocation_mode.as_deref(), s.count);
                }
            }
        }
    }
    let names = request_names(spec);
    let devices = spec.and_then(|s| s.devices.as_ref());
    for (i, k) in devices
        .and_then(|d| d.constraints.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ka = format!("{at}.constraints[{i}]");
        for (j, r) in k.requests.iter().flatten().enumerate() {
            request_ref(&mut c, &format!("{ka}.requests[{j}]"), r, &names);
        }
        if k.match_attribute.is_none() && k.distinct_attribute.is_none() {
            required(&mut c, &format!("{ka}.matchAttribute"), "");
        }
    }
    for (i, k) in devices
        .and_then(|d| d.config.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ka = format!("{at}.config[{i}]");
        for (j, r) in k.requests.iter().flatten().enumerate() {
            request_ref(&mut c, &format!("{ka}.requests[{j}]"), r, &names);
        }
        match &k.opaque {
            None => required(&mut c, &format!("{ka}.opaque"), ""),
            Some(o) => driver_name(&mut c, &format!("{ka}.opaque.driver"), &o.driver),
        }
    }
    c
}

fn decode(obj: &Value) -> Result<dra::ResourceClaim, ApiError> {
    serde_json::from_value(obj.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "ResourceClaim in version \"v1\" cannot be handled as a ResourceClaim: {e}"
        ))
    })
}

/// The server's defaults for a request: `allocationMode: ExactCount` and then `count: 1`.
fn default_request(r: &mut Value) {
    let Value::Object(m) = r else { return };
    if m.get("allocationMode")
        .is_none_or(|v| v.as_str() == Some(""))
    {
        m.insert("allocationMode".into(), json!("ExactCount"));
    }
    if m.get("allocationMode") == Some(&json!("ExactCount"))
        && m.get("count").is_none_or(|v| v.as_i64() == Some(0))
    {
        m.insert("count".into(), json!(1));
    }
}

fn apply_defaults(obj: &mut Value) {
    let Some(reqs) = obj
        .pointer_mut("/spec/devices/requests")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for r in reqs {
        if let Some(e) = r.get_mut("exactly") {
            default_request(e);
        }
        for s in r
            .get_mut("firstAvailable")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            default_request(s);
        }
    }
}

/// Create (`old` is `None`) or update of a claim through the main resource: 400 for fields of the wrong
/// type, the defaults applied, then the spec validated (create) or held immutable (update). A create drops
/// `status` (written through `/status` only), as the real server's create strategy does.
pub fn prepare_claim(obj: &mut Value, old: Option<&Value>) -> Result<Causes, ApiError> {
    decode(obj)?;
    apply_defaults(obj);
    let Some(old) = old else {
        if let Value::Object(m) = obj {
            m.remove("status");
        }
        return Ok(validate_spec(decode(obj)?.spec.as_ref()));
    };
    let spec = |v: &Value| v.get("spec").cloned().unwrap_or(json!({}));
    if spec(obj) != spec(old) {
        return Ok(vec![(
            "spec".into(),
            "Invalid value: \"object\": field is immutable".into(),
        )]);
    }
    Ok(Causes::new())
}

/// A write of the claim's `/status` (`new` is the object as it would be stored: the old spec and metadata,
/// the new status).
pub fn validate_claim_status(new: &Value, old: &Value) -> Result<Causes, ApiError> {
    let claim = decode(new)?;
    let before = decode(old)?;
    let names = request_names(claim.spec.as_ref());
    let mut c = Causes::new();
    let status = claim.status.unwrap_or_default();
    let old_allocation = before.status.and_then(|s| s.allocation);
    let reserved = status.reserved_for.as_deref().unwrap_or_default();
    let mut uids = BTreeSet::new();
    for (i, r) in reserved.iter().enumerate() {
        let ra = format!("status.reservedFor[{i}]");
        for (f, v) in [
            ("resource", &r.resource),
            ("name", &r.name),
            ("uid", &r.uid),
        ] {
            if v.is_empty() {
                required(&mut c, &format!("{ra}.{f}"), "");
            }
        }
        if !r.uid.is_empty() && !uids.insert(r.uid.as_str()) {
            c.push((ra, format!("Duplicate value: {}", quoted(&r.uid))));
        }
    }
    if !reserved.is_empty() && status.allocation.is_none() {
        c.push((
            "status.reservedFor".into(),
            "Forbidden: may not be specified when `allocated` is not set".into(),
        ));
    }
    match (&old_allocation, &status.allocation) {
        // Once set, the allocation stays (a deallocation removes it whole).
        (Some(was), Some(now)) if was != now => c.push((
            "status.allocation".into(),
            "Invalid value: \"object\": field is immutable".into(),
        )),
        (None, Some(now)) => {
            let at = "status.allocation.devices";
            let results = now
                .devices
                .as_ref()
                .and_then(|d| d.results.as_deref())
                .unwrap_or_default();
            if results.len() > MAX_RESULTS {
                too_many(&mut c, &format!("{at}.results"), results.len(), MAX_RESULTS);
            }
            for (i, r) in results.iter().enumerate() {
                let ra = format!("{at}.results[{i}]");
                request_ref(&mut c, &format!("{ra}.request"), &r.request, &names);
                driver_name(&mut c, &format!("{ra}.driver"), &r.driver);
                pool_name(&mut c, &format!("{ra}.pool"), &r.pool);
                dns_label(&mut c, &format!("{ra}.device"), &r.device);
            }
            for (i, k) in now
                .devices
                .as_ref()
                .and_then(|d| d.config.as_deref())
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let ka = format!("{at}.config[{i}]");
                match k.source.as_str() {
                    "FromClaim" | "FromClass" => {}
                    "" => required(&mut c, &format!("{ka}.source"), ""),
                    other => c.push((
                        format!("{ka}.source"),
                        format!(
                            "Unsupported value: {}: supported values: \"FromClaim\", \"FromClass\"",
                            quoted(other)
                        ),
                    )),
                }
                for (j, r) in k.requests.iter().flatten().enumerate() {
                    request_ref(&mut c, &format!("{ka}.requests[{j}]"), r, &names);
                }
            }
        }
        _ => {}
    }
    Ok(c)
}

/// A pod's `spec.resourceClaims` (create and update, with the pod's final name in `metadata.name`): each a
/// unique DNS-label name and exactly one of `resourceClaimName` or `resourceClaimTemplateName`, each a
/// valid object name; for a template, `<pod>-<name>` (the claim the control plane generates) must be a
/// valid claim name too.
pub fn validate_pod_claims(pod: &Value) -> Causes {
    let mut c = Causes::new();
    let mut seen = BTreeSet::new();
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let claims = pod
        .pointer("/spec/resourceClaims")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, claim) in claims.iter().enumerate() {
        let at = format!("spec.resourceClaims[{i}]");
        let s = |f: &str| claim.get(f).and_then(Value::as_str);
        let (direct, template) = (s("resourceClaimName"), s("resourceClaimTemplateName"));
        let name = s("name").unwrap_or("");
        if name.is_empty() {
            required(&mut c, &format!("{at}.name"), "");
        } else if !seen.insert(name) {
            c.push((
                format!("{at}.name"),
                format!("Duplicate value: {}", quoted(name)),
            ));
        } else {
            let before = c.len();
            dns_label(&mut c, &format!("{at}.name"), name);
            if c.len() == before && template.is_some() {
                let generated = format!("{pod_name}-{name}");
                for msg in subdomain_details(&generated) {
                    invalid(
                        &mut c,
                        &format!("{at}.name"),
                        &generated,
                        &format!("final ResourceClaim name: {msg}"),
                    );
                }
            }
        }
        match (direct, template) {
            (Some(_), Some(_)) => c.push((
                at.clone(),
                "Invalid value: \"object\": at most one of `resourceClaimName` or \
                 `resourceClaimTemplateName` may be specified"
                    .into(),
            )),
            (None, None) => c.push((
                at.clone(),
                "Invalid value: \"object\": must specify one of: `resourceClaimName`, \
                 `resourceClaimTemplateName`"
                    .into(),
            )),
            _ => {}
        }
        if let Some(n) = direct {
            dns_subdomain(&mut c, &format!("{at}.resourceClaimName"), n);
        }
        if let Some(n) = template {
            dns_subdomain(&mut c, &format!("{at}.resourceClaimTemplateName"), n);
        }
    }
    c
}

/// A pod's `status.resourceClaimStatuses` (status writes): each names an entry of `spec.resourceClaims`,
/// once, with a valid claim name.
pub fn validate_pod_claim_statuses(pod: &Value) -> Causes {
    let mut c = Causes::new();
    let claims: BTreeSet<&str> = pod
        .pointer("/spec/resourceClaims")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, st) in pod
        .pointer("/status/resourceClaimStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("status.resourceClaimStatuses[{i}].name");
        let name = st.get("name").and_then(Value::as_str).unwrap_or("");
        if !claims.contains(name) {
            invalid(
                &mut c,
                &at,
                name,
                "must match the name of an entry in `spec.resourceClaims`",
            );
        }
        if !seen.insert(name) {
            c.push((at.clone(), format!("Duplicate value: {}", quoted(name))));
        }
        if let Some(claim) = st.get("resourceClaimName").and_then(Value::as_str)
            && !claim.split('.').all(label_ok)
        {
            invalid(&mut c, &at, claim, SUBDOMAIN_MSG);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(requests: Value) -> Value {
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
               "metadata": {"name": "c"}, "spec": {"devices": {"requests": requests}}})
    }

    fn fields(c: &Causes) -> Vec<&str> {
        c.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn a_valid_claim_gets_the_defaults_and_loses_its_status() {
        let mut obj =
            claim(json!([{"name": "nic", "exactly": {"deviceClassName": "nic.example.com"}}]));
        obj["status"] = json!({"allocation": {}});
        assert_eq!(prepare_claim(&mut obj, None).unwrap(), Causes::new());
        assert_eq!(
            obj["spec"]["devices"]["requests"][0]["exactly"],
            json!({"deviceClassName": "nic.example.com", "allocationMode": "ExactCount", "count": 1})
        );
        assert!(obj.get("status").is_none());
    }

    #[test]
    fn requests_need_a_name_a_class_and_one_kind() {
        let mut obj = claim(json!([
            {"name": "Bad_Name", "exactly": {"deviceClassName": "c"}},
            {"name": "a"},
            {"name": "b", "exactly": {}},
            {"name": "b", "exactly": {"deviceClassName": "c", "allocationMode": "Some"}},
            {"name": "d", "exactly": {"deviceClassName": "c", "count": -1}},
        ]));
        let c = prepare_claim(&mut obj, None).unwrap();
        assert_eq!(
            fields(&c),
            [
                "spec.devices.requests[0].name",
                "spec.devices.requests[1]",
                "spec.devices.requests[2].exactly.deviceClassName",
                "spec.devices.requests[3]",
                "spec.devices.requests[3].exactly.allocationMode",
                "spec.devices.requests[4].exactly.count",
            ],
            "{c:?}"
        );
        assert!(c[1].1.starts_with("Required value: exactly one of"));
        assert_eq!(c[3].1, "Duplicate value: \"b\"");
    }

    #[test]
    fn the_spec_is_immutable() {
        let mut old = claim(json!([{"name": "nic", "exactly": {"deviceClassName": "c"}}]));
        prepare_claim(&mut old, None).unwrap();
        // The same spec without the defaults is no change.
        let mut same = claim(json!([{"name": "nic", "exactly": {"deviceClassName": "c"}}]));
        assert!(prepare_claim(&mut same, Some(&old)).unwrap().is_empty());
        let mut changed = claim(json!([{"name": "nic2", "exactly": {"deviceClassName": "c"}}]));
        assert_eq!(
            fields(&prepare_claim(&mut changed, Some(&old)).unwrap()),
            ["spec"]
        );
    }

    #[test]
    fn allocation_results_name_requests_of_the_claim() {
        let old = claim(json!([
            {"name": "nic", "exactly": {"deviceClassName": "c"}},
            {"name": "any", "firstAvailable": [{"name": "big", "deviceClassName": "c"}]}
        ]));
        let result = |request: &str| {
            json!({"request": request, "driver": "nic.example.com",
                                            "pool": "pool0", "device": "vf0"})
        };
        let mut new = old.clone();
        new["status"] = json!({"allocation": {"devices": {"results": [
            result("nic"), result("any/big"), result("gpu"), result("any/small"), result("a/b/c")]}}});
        let c = validate_claim_status(&new, &old).unwrap();
        let at = "status.allocation.devices.results";
        assert_eq!(
            c,
            [
                (
                    format!("{at}[2].request"),
                    format!("Invalid value: \"gpu\": {REQUEST_REF_MSG}")
                ),
                (
                    format!("{at}[3].request"),
                    format!("Invalid value: \"any/small\": {REQUEST_REF_MSG}")
                ),
                (
                    format!("{at}[4].request"),
                    format!("Invalid value: \"a/b/c\": {REQUEST_REF_MSG}")
                ),
            ]
        );
    }

    #[test]
    fn results_need_driver_pool_and_device_and_stay_once_set() {
        let old = claim(json!([{"name": "nic", "exactly": {"deviceClassName": "c"}}]));
        let mut new = old.clone();
        new["status"] = json!({"allocation": {"devices": {"results": [{"request": "nic"}]}},
                               "reservedFor": [{"resource": "pods"}]});
        let c = validate_claim_status(&new, &old).unwrap();
        let at = "status.allocation.devices.results[0]";
        assert_eq!(
            fields(&c),
            [
                "status.reservedFor[0].name",
                "status.reservedFor[0].uid",
                &format!("{at}.driver"),
                &format!("{at}.driver"),
                &format!("{at}.pool"),
                &format!("{at}.device"),
            ]
        );
        let mut allocated = old.clone();
        allocated["status"] = json!({"allocation": {"devices": {"results": [
            {"request": "nic", "driver": "d.example.com", "pool": "p", "device": "vf0"}]}}});
        assert!(validate_claim_status(&allocated, &old).unwrap().is_empty());
        let mut moved = allocated.clone();
        moved["status"]["allocation"]["devices"]["results"][0]["device"] = json!("vf1");
        assert_eq!(
            fields(&validate_claim_status(&moved, &allocated).unwrap()),
            ["status.allocation"]
        );
        let mut reserved_only = old.clone();
        reserved_only["status"] =
            json!({"reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}]});
        assert_eq!(
            fields(&validate_claim_status(&reserved_only, &old).unwrap()),
            ["status.reservedFor"]
        );
    }

    #[test]
    fn pod_claim_statuses_name_the_pods_claims() {
        let pod = json!({"spec": {"resourceClaims": [{"name": "nic", "resourceClaimName": "p-nic"}]},
                         "status": {"resourceClaimStatuses": [{"name": "nic", "resourceClaimName": "p-nic"},
                                                              {"name": "gpu", "resourceClaimName": "p-gpu"}]}});
        assert!(validate_pod_claims(&pod).is_empty());
        assert_eq!(
            validate_pod_claim_statuses(&pod),
            [(
                "status.resourceClaimStatuses[1].name".to_string(),
                "Invalid value: \"gpu\": must match the name of an entry in `spec.resourceClaims`"
                    .to_string()
            )]
        );
        let bad = json!({"spec": {"resourceClaims": [{"name": "a"}, {"name": "a", "resourceClaimName": "x",
                                                      "resourceClaimTemplateName": "Y"}]}});
        assert_eq!(
            fields(&validate_pod_claims(&bad)),
            [
                "spec.resourceClaims[0]",
                "spec.resourceClaims[1].name",
                "spec.resourceClaims[1]",
                "spec.resourceClaims[1].resourceClaimTemplateName"
            ]
        );
    }

    /// The claim generated from a template is named `<pod>-<claim>`; a pod whose name makes that too long
    /// is refused, one naming its claim directly is not.
    #[test]
    fn a_template_claim_needs_a_valid_generated_name() {
        let pod = |claim: Value| json!({"metadata": {"name": "p".repeat(250)}, "spec": {"resourceClaims": [claim]}});
        let c = validate_pod_claims(&pod(
            json!({"name": "nic", "resourceClaimTemplateName": "t"}),
        ));
        assert_eq!(fields(&c), ["spec.resourceClaims[0].name"]);
        assert!(
            c[0].1
                .ends_with("final ResourceClaim name: must be no more than 253 characters"),
            "{c:?}"
        );
        assert!(
            validate_pod_claims(&pod(json!({"name": "nic", "resourceClaimName": "c"}))).is_empty()
        );
        let fits = json!({"metadata": {"name": "p"}, "spec": {"resourceClaims": [
            {"name": "nic", "resourceClaimTemplateName": "t"}]}});
        assert!(validate_pod_claims(&fits).is_empty());
    }
}
