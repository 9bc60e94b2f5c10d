//! `FsError` and the one table that turns errors into errnos and log levels.

use thiserror::Error;

use super::FileHandle;
use crate::namespace::{BadName, NamespaceError};
use crate::object::ObjectError;
use crate::readahead::ReadError;
use crate::retention::TierError;
use crate::upload::UploadError;
use crate::view::ViewError;

/// A failed filesystem operation.
#[derive(Debug, Error)]
pub enum FsError {
    /// Namespace failure.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// Read failure.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The content is bad, or could not be decoded.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The object an open file reads was replaced or deleted in the store meanwhile:
    /// EIO, not ENOENT, which read(2) never gives, and which a reader would take for a
    /// missing name rather than a file that changed under it.
    #[error("the object changed under an open file: {0}")]
    VersionGone(ViewError),
    /// A change on a read-only mount or place.
    #[error("read-only file system")]
    ReadOnly,
    /// The kernel named a handle that is not open (or a reader where a writer is needed).
    #[error("unknown file handle {0}")]
    BadHandle(FileHandle),
    /// Uploading failed; the file stays journaled.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// Local disk (the spool).
    #[error("local cache: {0}")]
    Io(#[from] std::io::Error),
    /// The name exists.
    #[error("file exists")]
    Exists,
    /// rmdir of a directory with entries.
    #[error("directory not empty")]
    NotEmpty,
    /// A rename the store cannot do in place; `mv` falls back to copying.
    #[error("cannot rename across this mount's directories")]
    CrossDevice,
    /// Not supported for this kind of file (hard links), or a read-only attribute.
    #[error("operation not permitted")]
    NotPermitted,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttribute,
    /// An extended attribute outside `user.rgrid.*`.
    #[error("attribute not supported")]
    NotSupported,
    /// An attribute value that does not parse.
    #[error("invalid attribute value")]
    InvalidValue,
    /// The file is being written and not in the store yet.
    #[error("file busy")]
    Busy,
    /// The store failed outside a read.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The caller may not use this (the control channel, for other users).
    #[error("permission denied")]
    AccessDenied,
    /// The caller's buffer is too small for the value.
    #[error("value larger than the buffer")]
    Range,
    /// A barrier (fsync) found an upload that did not reach the store, for this reason.
    #[error("upload failed: {0}")]
    UploadFailed(String),
    /// The mount has `--max-open-files` files open (from the daemon's descriptor limit).
    #[error("the mount has its most files open ({max})")]
    TooManyOpen {
        /// The limit.
        max: usize,
    },
    /// A write or truncate past the largest object the store takes.
    #[error("file larger than the store's object limit ({max} bytes)")]
    TooLarge {
        /// The largest file size.
        max: u64,
    },
    /// The object is in an archive storage class and not restored.
    #[error("{key} is archived ({class}) and not restored yet; to restore it: setfattr -n user.rgrid.restore -v DAYS FILE")]
    Archived {
        /// Its key.
        key: String,
        /// Its storage class.
        class: String,
    },
    /// An open the kernel would refuse: passthrough opens (of another version) hold the
    /// file.
    #[error("text file busy: readers hold it through FUSE passthrough")]
    TextBusy,
    /// A retention tier the store would not act on.
    #[error(transparent)]
    Retention(#[from] TierError),
}

impl From<BadName> for FsError {
    fn from(why: BadName) -> FsError {
        FsError::Namespace(NamespaceError::InvalidName(why))
    }
}

/// How loudly a failure is logged: expected outcomes (a missing file) stay quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Normal traffic, e.g. ENOENT from a lookup.
    Debug,
    /// Worth an operator's eye: the store failed, data changed under a reader.
    Warn,
}

impl FsError {
    /// A failed read of the version an open file holds: a version gone from the store
    /// is [`FsError::VersionGone`], any other failure as it is.
    pub fn of_read(e: ViewError) -> FsError {
        if e.is_version_gone() {
            FsError::VersionGone(e)
        } else {
            FsError::View(e)
        }
    }

    /// The errno the caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Namespace(e) => match e {
                NamespaceError::NotFound | NamespaceError::UnknownInode(_) => libc::ENOENT,
                NamespaceError::NotADirectory => libc::ENOTDIR,
                NamespaceError::IsADirectory => libc::EISDIR,
                NamespaceError::InvalidName(why) => name_errno(*why),
                NamespaceError::ReadOnly => libc::EROFS,
                NamespaceError::TooManyTags => libc::ENOSPC,
                NamespaceError::Object(e) => object_errno(e),
            },
            FsError::View(ViewError::Read(e)) | FsError::Read(e) => read_errno(e),
            FsError::View(_) | FsError::VersionGone(_) => libc::EIO,
            FsError::ReadOnly => libc::EROFS,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::Upload(UploadError::Io(e)) | FsError::Io(e) => {
                e.raw_os_error().unwrap_or(libc::EIO)
            }
            FsError::Upload(UploadError::Object(e)) | FsError::Object(e) => object_errno(e),
            FsError::Upload(UploadError::Damaged { .. }) => libc::EIO,
            FsError::Upload(UploadError::TooLarge { .. }) | FsError::TooLarge { .. } => libc::EFBIG,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::CrossDevice => libc::EXDEV,
            FsError::NotPermitted => libc::EPERM,
            FsError::NoAttribute => libc::ENODATA,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::InvalidValue => libc::EINVAL,
            FsError::Busy => libc::EBUSY,
            FsError::AccessDenied => libc::EACCES,
            FsError::Range => libc::ERANGE,
            FsError::UploadFailed(_) => libc::EIO,
            FsError::Archived { .. } => libc::EREMOTE,
            FsError::TextBusy => libc::ETXTBSY,
            FsError::TooManyOpen { .. } => libc::ENFILE,
            FsError::Retention(TierError::NoTiers) => libc::ENOTSUP,
            FsError::Retention(TierError::NoRule { .. }) => libc::EINVAL,
            FsError::Retention(TierError::RulesUnknown) => libc::EIO,
        }
    }

    /// Whether the store failed the operation (it was unreachable, refused, or sent bad
    /// data), as opposed to a missing file or a refusal of ours.
    pub fn is_store_failure(&self) -> bool {
        match self {
            FsError::Namespace(NamespaceError::Object(e))
            | FsError::Object(e)
            | FsError::Upload(UploadError::Object(e)) => !matches!(e, ObjectError::NotFound { .. }),
            FsError::Read(_) | FsError::View(ViewError::Read(_)) => true,
            _ => false,
        }
    }

    /// How loudly to log it: the same errno can be routine from one layer and news from
    /// another (ENOENT from a lookup, or from an object deleted under a reader).
    pub fn severity(&self) -> Severity {
        match self {
            FsError::Namespace(NamespaceError::Object(e)) | FsError::Object(e) => {
                object_severity(e)
            }
            FsError::Namespace(NamespaceError::UnknownInode(_)) => Severity::Warn,
            FsError::Namespace(_) => Severity::Debug,
            FsError::Read(_)
            | FsError::View(_)
            | FsError::VersionGone(_)
            | FsError::Upload(_)
            | FsError::Io(_)
            | FsError::UploadFailed(_)
            | FsError::Archived { .. }
            | FsError::TooManyOpen { .. }
            | FsError::TextBusy => Severity::Warn,
            FsError::BadHandle(_) => Severity::Warn,
            FsError::ReadOnly
            | FsError::Exists
            | FsError::NotEmpty
            | FsError::CrossDevice
            | FsError::NotPermitted
            | FsError::NoAttribute
            | FsError::NotSupported
            | FsError::InvalidValue
            | FsError::Busy
            | FsError::AccessDenied
            | FsError::Range
            | FsError::TooLarge { .. }
            | FsError::Retention(_) => Severity::Debug,
        }
    }
}

/// The errno of each name rule.
fn name_errno(why: BadName) -> i32 {
    match why {
        BadName::TooLong | BadName::KeyTooLong => libc::ENAMETOOLONG,
        BadName::Empty | BadName::Dot | BadName::Nul | BadName::NotUtf8 => libc::EINVAL,
    }
}

fn read_errno(e: &ReadError) -> i32 {
    match e {
        ReadError::Object(e) => object_errno(e),
        ReadError::Truncated { .. }
        | ReadError::Stalled { .. }
        | ReadError::Interrupted(_)
        | ReadError::Task(_) => libc::EIO,
    }
}

fn object_errno(e: &ObjectError) -> i32 {
    match e {
        ObjectError::NotFound { .. } => libc::ENOENT,
        ObjectError::AccessDenied { .. } => libc::EACCES,
        ObjectError::Unsupported { .. } => libc::ENOTSUP,
        // A changed object is EIO (not ESTALE): the reader must not retry into a mix.
        ObjectError::PreconditionFailed { .. }
        | ObjectError::NoSuchBucket { .. }
        | ObjectError::Unavailable { .. }
        | ObjectError::Unreachable { .. }
        | ObjectError::Other { .. } => libc::EIO,
    }
}

/// A key gone from the store outside a read is routine (a race with another deleter);
/// everything else the store says no to is worth an operator's eye.
fn object_severity(e: &ObjectError) -> Severity {
    match e {
        ObjectError::NotFound { .. } | ObjectError::Unsupported { .. } => Severity::Debug,
        _ => Severity::Warn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(why: BadName) -> FsError {
        why.into()
    }

    #[test]
    fn each_name_rule_has_its_errno() {
        assert_eq!(name(BadName::TooLong).errno(), libc::ENAMETOOLONG);
        assert_eq!(name(BadName::KeyTooLong).errno(), libc::ENAMETOOLONG);
        for why in [BadName::Empty, BadName::Dot, BadName::Nul, BadName::NotUtf8] {
            assert_eq!(name(why).errno(), libc::EINVAL, "{why:?}");
        }
        assert_eq!(name(BadName::TooLong).severity(), Severity::Debug);
    }

    #[test]
    fn severity_follows_the_layer_not_the_errno() {
        let gone = || ObjectError::NotFound { key: "k".into() };
        let lookup = FsError::Namespace(NamespaceError::NotFound);
        let mid_read = FsError::Read(ReadError::Object(gone()));
        assert_eq!(
            (lookup.errno(), mid_read.errno()),
            (libc::ENOENT, libc::ENOENT)
        );
        let under_a_reader = FsError::VersionGone(ViewError::Read(ReadError::Object(gone())));
        assert_eq!(under_a_reader.errno(), libc::EIO);
        assert_eq!(under_a_reader.severity(), Severity::Warn);
        assert_eq!(lookup.severity(), Severity::Debug);
        assert_eq!(mid_read.severity(), Severity::Warn);
        assert_eq!(FsError::Object(gone()).severity(), Severity::Debug);
    }
}
