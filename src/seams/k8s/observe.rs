//! What watches the API requests plexus makes (the daemon's metrics): shared by the client and the watch
//! caches, so neither imports the other for it.

use std::time::Duration;

/// How one API request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiOutcome {
    /// A 2xx answer.
    Ok,
    /// An error status from the server.
    Status(u16),
    /// No answer: connection, TLS or time-out failure.
    Failed,
}

/// Watches the API requests the client and the watch caches make, and the cache lookups done instead.
pub trait ApiObserver: Send + Sync {
    /// One request (`what`: e.g. "get pod"), how long it took and how it ended.
    fn api_request(&self, what: &'static str, elapsed: Duration, outcome: ApiOutcome);
    /// A pod or NAD lookup (`kind`) answered by the watch cache (`hit`) or sent to the API.
    fn cache_lookup(&self, kind: &'static str, hit: bool);
}
