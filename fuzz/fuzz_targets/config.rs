//! The plexus config on stdin: raw parse and validation (`src/pure/config/`; docs/multus-compat.md,
//! "Config keys").
//!
//! Invariants: no panic; an accepted config has a name, absolute clean directories, a supported
//! version and delegates whose plugin types are never paths (CNI-52); the raw model written back
//! as JSON validates to the same config (parse of valid output is stable); a refusal maps to CNI
//! code 1, 6 or 7 and renders as an error reply that parses again.
#![no_main]

use std::path::Component;

use libfuzzer_sys::fuzz_target;
use plexus::{pure::config::{Config, Primary, RawConfig}, ops::error::Error};
use plexus_cni::{ErrorReply, codes, validate};

fuzz_target!(|data: &[u8]| {
    match Config::from_bytes(data) {
        Ok(config) => accepted(data, &config),
        Err(e) => {
            let e = Error::from(e);
            let code = e.cni_code();
            assert!(
                [
                    codes::INCOMPATIBLE_VERSION,
                    codes::DECODE_FAILURE,
                    codes::INVALID_NETWORK_CONFIG
                ]
                .contains(&code),
                "code {code} for {e}"
            );
            let reply = e.to_reply("1.0.0");
            let again = ErrorReply::parse(reply.to_json().as_bytes()).expect("reply parses");
            assert_eq!(again.code, code);
            assert!(!again.msg.is_empty());
        }
    }
});

fn accepted(data: &[u8], c: &Config) {
    assert!(!c.name.is_empty());
    for dir in [&c.conf_dir, &c.cni_dir, &c.bin_dir] {
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(
            dir.components()
                .all(|p| !matches!(p, Component::ParentDir | Component::CurDir)),
            "{} is not clean",
            dir.display()
        );
    }
    if let Primary::Delegates(list) = &c.primary {
        assert!(!list.is_empty());
        for n in list {
            for p in &n.plugins {
                validate::plugin_type(&p.plugin_type).expect("accepted plugin type");
            }
        }
    }
    let raw = RawConfig::parse(data).expect("accepted config parses raw");
    let written = serde_json::to_vec(&raw).expect("raw config serialises");
    let again = Config::from_bytes(&written).unwrap_or_else(|e| {
        panic!(
            "written back as {} it fails: {e}",
            String::from_utf8_lossy(&written)
        )
    });
    assert_eq!(
        &again,
        c,
        "written back as {}",
        String::from_utf8_lossy(&written)
    );
}
