//! The CNI device-info files of the Device Information Spec (NPWG-70..73): copied from the device
//! plugin's file before the delegate runs, read into the network-status entry after it, removed on DEL.

use std::path::Path;

use serde_json::Value;

use crate::{pure::plan::Attachment, store::fsutil};

/// Before the delegate runs (NPWG-71): copy the device plugin's file for the attachment's device into its
/// CNI device-info file, creating the directory. Only for a device that came from a resource; a missing
/// device-plugin file is normal (many plugins write none; the delegate may write the CNI file itself).
/// Failures are logged, never fatal, as in Go Multus.
pub fn prepare(dir: &Path, a: &Attachment) {
    let (Some(resource), Some(device), Some(target)) = (
        a.resource_name.as_deref(),
        a.requests.device_id.as_deref(),
        a.requests.device_info_file.as_deref(),
    ) else {
        return;
    };
    let source = super::dp_file(dir, resource, device);
    let bytes = match std::fs::read(&source) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %source.display(), "no device-plugin device-info file");
            return;
        }
        Err(e) => {
            tracing::warn!(
                "network {}: reading device-info {}: {e}",
                a.status_name,
                source.display()
            );
            return;
        }
    };
    let target = Path::new(target);
    let written = target
        .parent()
        .map_or(Ok(()), |p| fsutil::ensure_dir(p, 0o755))
        .and_then(|()| fsutil::atomic_write(target, &bytes, 0o444));
    if let Err(e) = written {
        tracing::warn!(
            "network {}: writing device-info {}: {e}",
            a.status_name,
            target.display()
        );
    }
}

/// After the delegate ran (NPWG-73): the content of the attachment's CNI device-info file, for the
/// `device-info` of its network-status entries. Absent or unreadable files give `None` (logged).
pub fn read(a: &Attachment) -> Option<Value> {
    let path = Path::new(a.requests.device_info_file.as_deref()?);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "network {}: reading device-info {}: {e}",
                a.status_name,
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Some(v),
        Ok(_) | Err(_) => {
            tracing::warn!(
                "network {}: device-info {} is not a JSON object; not published",
                a.status_name,
                path.display()
            );
            None
        }
    }
}

/// On DEL (NPWG-71): remove the attachment's CNI device-info file; already gone is success.
pub fn remove(a: &Attachment) {
    if let Some(path) = a.requests.device_info_file.as_deref()
        && let Err(e) = fsutil::remove_if_exists(Path::new(path))
    {
        tracing::warn!(
            "network {}: removing device-info {path}: {e}",
            a.status_name
        );
    }
}
