//! CNI specification types (spec 0.1.0 to 1.1.0): pure data and conversions, no I/O.
//!
//! Checklist ids (CNI-n) in the docs refer to part B of the plexus reference notes.

pub mod args;
pub mod command;
pub mod error;
pub mod gc;
pub mod result;
pub mod validate;
pub mod version;

pub use args::{ArgsError, CniArgs};
pub use command::Command;
pub use error::{ErrorReply, code_name, codes};
pub use gc::{GcAttachment, GcError, valid_attachments};
pub use result::{CniResult, Dns, Interface, IpConfig, ResultError, Route};
pub use validate::ValidationError;
pub use version::{CniVersion, VersionError};
