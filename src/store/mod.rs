//! The on-disk store: the container cache, libcni's result cache, container locks, atomic file writes,
//! `confDir` lookups and the daemon's trash. Depends on the pure core only.

pub mod cache;
pub mod confdir;
pub mod fsutil;
pub mod lock;
pub mod resultcache;
pub mod trash;
