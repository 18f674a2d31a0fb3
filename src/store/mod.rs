//! The on-disk store: the container cache, libcni's result cache, container locks, atomic file writes,
//! `confDir` lookups, the daemon's trash and hot-plug's record of the refusals it posted. Depends on the
//! pure core only.

pub mod cache;
pub mod confdir;
pub mod fsutil;
pub mod lock;
pub mod refusals;
pub mod resultcache;
pub mod trash;
