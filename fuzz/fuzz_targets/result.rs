//! CNI ADD results of every version and their conversion (`crates/cni/src/result.rs`, CNI-34 to
//! CNI-37): what delegates print, what plexus caches and what it returns to the runtime.
//!
//! Invariants: no panic; a result that parses renders in every version or fails only with "no IP
//! addresses" (0.1.0/0.2.0); every rendering parses again and renders the same (parse of valid
//! output is stable); `convert` agrees with parse + render; a 1.x result read from its own 1.x
//! rendering keeps every interface, address and route; a rendering parsed again is a fixed point; helper queries never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::{CniResult, CniVersion, ResultError, result::convert};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the fallback version (a result without `cniVersion`, libcni #895).
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let fallback = CniVersion::ALL[usize::from(first) % CniVersion::ALL.len()];
    let Ok(result) = CniResult::parse(bytes, fallback) else {
        return;
    };
    let value: Value = serde_json::from_slice(bytes).expect("parsed bytes are JSON");
    let _ = result.first_sandbox_interface();
    let _ = result.default_gateways();
    for i in 0..result.interfaces.len() {
        let _ = result.ips_for_interface(i).count();
    }
    for v in CniVersion::ALL {
        let rendered = match result.to_value(v) {
            Ok(r) => r,
            Err(ResultError::NoIpAddresses) => {
                assert!(!v.has_rich_result() && result.ips.is_empty());
                continue;
            }
            Err(e) => panic!("rendering {v:?} failed: {e}"),
        };
        assert_eq!(rendered["cniVersion"], v.as_str());
        let converted = convert(&value, fallback, v).expect("convert agrees with parse + render");
        assert_eq!(converted, rendered);
        let text = rendered.to_string();
        let again = CniResult::parse(text.as_bytes(), CniVersion::V0_1_0)
            .unwrap_or_else(|e| panic!("{v:?} rendering does not parse: {e}: {text:.500}"));
        assert_eq!(again.cni_version, v);
        let twice = again.to_value(v).expect("second rendering");
        assert_eq!(twice, rendered, "unstable {v:?} rendering");
        let fixed = CniResult::from_value(&twice, CniVersion::V0_1_0).expect("third parse");
        assert_eq!(fixed, again, "parse of a rendering is a fixed point");
        if result.cni_version.has_rich_result() && v >= CniVersion::V1_0_0 {
            // 1.x to 1.x keeps every interface, address and route (empty values are omitted, as Go's
            // omitempty does, so compare what they say).
            let names = |r: &CniResult| {
                r.interfaces
                    .iter()
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&again), names(&result));
            let ips = |r: &CniResult| {
                r.ips
                    .iter()
                    .map(|i| (i.address, i.gateway, i.interface))
                    .collect::<Vec<_>>()
            };
            assert_eq!(ips(&again), ips(&result));
            let routes = |r: &CniResult| r.routes.iter().map(|x| (x.dst, x.gw)).collect::<Vec<_>>();
            assert_eq!(routes(&again), routes(&result));
        }
    }
});
