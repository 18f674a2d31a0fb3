//! The transport failures between the shim and the daemon, each with the CNI code the runtime gets for it
//! and, for those the daemon answers itself, the HTTP status it answers with: one table both sides read
//! (docs/daemon.md, "The shim" and "Wire format, and Go Multus's shim"). Errors of the CNI operation itself
//! keep the code the core chose and travel as [`CNI_ERROR_STATUS`].

use plexus_cni::{ErrorReply, codes};

/// The HTTP status of a CNI error reply from the core (Go Multus's daemon answers every error so).
pub const CNI_ERROR_STATUS: u16 = 400;
/// The HTTP status of a daemon that cannot take work now (not ready, shutting down, busy): the shim tries
/// again while it waits, as if nothing were listening.
pub const UNAVAILABLE_STATUS: u16 = 503;

/// A transport failure: the call did not get a CNI answer from the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    // The shim's side.
    /// ADD, CHECK or GC found no daemon (no socket, refused, a 503) for all of `daemonWaitSeconds`.
    NotReachable,
    /// A connect error that waiting will not fix (permission denied, not a socket).
    ConnectFailed,
    /// The connection ended without a complete reply: the daemon died mid-request.
    Dropped,
    /// STATUS found no daemon: the plugin is not available (STATUS does not wait).
    StatusUnavailable,
    /// A DEL the daemon could not take, and no thin `plexus` to do it instead.
    NoFallback,
    /// The thin `plexus` the shim ran for a DEL ended without a usable exit status.
    FallbackFailed,
    /// The daemon's reply holds no CNI error, or an ADD reply without a result that converts.
    UnreadableReply,
    /// The shim could not encode its request.
    EncodeFailed,
    // The daemon's side.
    /// The request body could not be read whole (too big, or cut off).
    BodyUnreadable,
    /// The request body is not a request of the wire format.
    BadRequest,
    /// The request's env has no `CNI_COMMAND`.
    NoCommand,
    /// `GET /readyz` while the daemon is not ready (its caches not synced, or shutting down).
    NotReady,
    /// The daemon is shutting down and takes no new request.
    ShuttingDown,
    /// `maxQueue` requests are already waiting.
    QueueFull,
    /// The request's slots were closed while it waited (the daemon is stopping).
    SlotsClosed,
    /// The request handler panicked.
    HandlerPanicked,
    /// The core's answer could not be put on the wire (an error that is not a CNI error reply, an ADD
    /// without a valid result).
    Unrenderable,
}

impl Transport {
    /// Every failure, for tests and docs.
    pub const ALL: [Transport; 17] = [
        Transport::NotReachable,
        Transport::ConnectFailed,
        Transport::Dropped,
        Transport::StatusUnavailable,
        Transport::NoFallback,
        Transport::FallbackFailed,
        Transport::UnreadableReply,
        Transport::EncodeFailed,
        Transport::BodyUnreadable,
        Transport::BadRequest,
        Transport::NoCommand,
        Transport::NotReady,
        Transport::ShuttingDown,
        Transport::QueueFull,
        Transport::SlotsClosed,
        Transport::HandlerPanicked,
        Transport::Unrenderable,
    ];

    /// The CNI code (CNI-38): 11 where the runtime's retry may succeed, 50 for STATUS, 999 otherwise.
    pub const fn code(self) -> u32 {
        use Transport::*;
        match self {
            NotReachable | ConnectFailed | Dropped | NoFallback => codes::TRY_AGAIN_LATER,
            NotReady | ShuttingDown | QueueFull | SlotsClosed => codes::TRY_AGAIN_LATER,
            StatusUnavailable => codes::NOT_AVAILABLE,
            BodyUnreadable | BadRequest => codes::DECODE_FAILURE,
            NoCommand => codes::INVALID_ENV,
            FallbackFailed | UnreadableReply | EncodeFailed => codes::INTERNAL,
            HandlerPanicked | Unrenderable => codes::INTERNAL,
        }
    }

    /// The HTTP status the daemon answers with; `None` for the shim's own failures.
    pub const fn status(self) -> Option<u16> {
        use Transport::*;
        match self {
            BodyUnreadable | BadRequest | NoCommand | Unrenderable => Some(CNI_ERROR_STATUS),
            NotReady | ShuttingDown | QueueFull | SlotsClosed => Some(UNAVAILABLE_STATUS),
            HandlerPanicked => Some(500),
            NotReachable | ConnectFailed | Dropped | StatusUnavailable | NoFallback
            | FallbackFailed | UnreadableReply | EncodeFailed => None,
        }
    }

    /// The CNI error reply for this failure.
    pub fn reply(self, msg: impl Into<String>, details: impl Into<String>) -> ErrorReply {
        ErrorReply::new(self.code(), msg, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_the_cni_code_and_status_of_the_table() {
        use Transport::*;
        // (failure, CNI code as the spec numbers them, HTTP status of the daemon's answer)
        let table = [
            (NotReachable, 11, None),
            (ConnectFailed, 11, None),
            (Dropped, 11, None),
            (StatusUnavailable, 50, None),
            (NoFallback, 11, None),
            (FallbackFailed, 999, None),
            (UnreadableReply, 999, None),
            (EncodeFailed, 999, None),
            (BodyUnreadable, 6, Some(400)),
            (BadRequest, 6, Some(400)),
            (NoCommand, 4, Some(400)),
            (NotReady, 11, Some(503)),
            (ShuttingDown, 11, Some(503)),
            (QueueFull, 11, Some(503)),
            (SlotsClosed, 11, Some(503)),
            (HandlerPanicked, 999, Some(500)),
            (Unrenderable, 999, Some(400)),
        ];
        assert_eq!(table.len(), Transport::ALL.len());
        for ((t, code, status), listed) in table.into_iter().zip(Transport::ALL) {
            assert_eq!(t, listed, "ALL lists every failure in order");
            assert_eq!((t.code(), t.status()), (code, status), "{t:?}");
            let r = t.reply("m", "d");
            assert_eq!(
                (r.code, r.msg.as_str(), r.details.as_str()),
                (code, "m", "d")
            );
        }
    }

    #[test]
    fn the_shim_waits_on_every_unavailable_answer_and_none_other() {
        // A 503 is tried again by the shim (docs/daemon.md, "The shim"): only failures the runtime may retry
        // with success answer it.
        for t in Transport::ALL {
            if t.status() == Some(UNAVAILABLE_STATUS) {
                assert_eq!(t.code(), codes::TRY_AGAIN_LATER, "{t:?}");
            }
        }
        assert_eq!((CNI_ERROR_STATUS, UNAVAILABLE_STATUS), (400, 503));
    }
}
