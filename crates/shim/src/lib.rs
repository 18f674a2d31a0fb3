//! plexus's daemon mode, client side: the wire format of the daemon's unix socket ([`wire`]), shared with
//! `plexus daemon`, and the shim that the container runtime runs in daemon mode.

pub mod wire;
