//! plexus's daemon mode, client side: the wire format of the daemon's unix socket ([`wire`]), shared with
//! `plexus daemon`, the transport failures and the codes both sides answer them with ([`transport`]), and
//! the shim that the container runtime runs in daemon mode ([`shim`], over the config keys it reads,
//! [`conf`], and a tiny HTTP/1.1 client, [`http`]).

pub mod conf;
pub mod entry;
pub mod http;
pub mod shim;
pub mod transport;
pub mod wire;
