//! Reading a CNI result the tests got back: which address an interface was given.

use ipnet::IpNet;
use serde_json::Value;

/// The address of `ifname` in a result (the first IP whose `interface` index names it).
pub fn result_address(result: &Value, ifname: &str) -> Option<IpNet> {
    let idx = result["interfaces"]
        .as_array()?
        .iter()
        .position(|i| i["name"] == ifname)?;
    result["ips"]
        .as_array()?
        .iter()
        .find(|ip| ip["interface"].as_u64() == Some(idx as u64))?["address"]
        .as_str()?
        .parse()
        .ok()
}

/// Whether `addr` lies in `subnet`, with the subnet's prefix length.
pub fn in_subnet(addr: &IpNet, subnet: &str) -> bool {
    let s: IpNet = subnet.parse().expect("a subnet");
    s.contains(&addr.addr()) && addr.prefix_len() == s.prefix_len()
}

/// The `sandbox` of interface `ifname` in a result (`Null` when the interface or its sandbox is missing).
pub fn interface_sandbox(result: &Value, ifname: &str) -> Value {
    result["interfaces"]
        .as_array()
        .and_then(|ifaces| ifaces.iter().find(|i| i["name"] == ifname))
        .map(|i| i["sandbox"].clone())
        .unwrap_or(Value::Null)
}
