//! `FsError` and the one table that turns errors into errnos and log levels.

use thiserror::Error;

use crate::namespace::NamespaceError;
use crate::object::ObjectError;
use crate::readahead::ReadError;
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
    /// A change on a read-only mount or place.
    #[error("read-only file system")]
    ReadOnly,
    /// The kernel named a handle that is not open (or a reader where a writer is needed).
    #[error("unknown file handle {0}")]
    BadHandle(u64),
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
    /// The errno the caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Namespace(e) => match e {
                NamespaceError::NotFound | NamespaceError::UnknownInode(_) => libc::ENOENT,
                NamespaceError::NotADirectory => libc::ENOTDIR,
                NamespaceError::IsADirectory => libc::EISDIR,
                NamespaceError::InvalidName => libc::EINVAL,
                NamespaceError::ReadOnly => libc::EROFS,
                NamespaceError::Object(e) => object_errno(e),
            },
            FsError::View(ViewError::Read(e)) | FsError::Read(e) => match e {
                ReadError::Object(e) => object_errno(e),
                ReadError::Truncated { .. }
                | ReadError::Stalled { .. }
                | ReadError::Interrupted(_)
                | ReadError::Task(_) => libc::EIO,
            },
            FsError::View(_) => libc::EIO,
            FsError::ReadOnly => libc::EROFS,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::Upload(UploadError::Io(e)) | FsError::Io(e) => {
                e.raw_os_error().unwrap_or(libc::EIO)
            }
            FsError::Upload(UploadError::Object(e)) | FsError::Object(e) => object_errno(e),
            FsError::Upload(UploadError::Damaged { .. }) => libc::EIO,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::CrossDevice => libc::EXDEV,
            FsError::NotPermitted => libc::EPERM,
            FsError::NoAttribute => libc::ENODATA,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::InvalidValue => libc::EINVAL,
            FsError::Busy => libc::EBUSY,
        }
    }

    /// How loudly to log it.
    pub fn severity(&self) -> Severity {
        match self.errno() {
            libc::ENOENT
            | libc::EROFS
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::EXDEV
            | libc::EPERM
            | libc::ENODATA
            | libc::ENOTSUP
            | libc::EINVAL
            | libc::EBUSY => Severity::Debug,
            _ => Severity::Warn,
        }
    }
}

fn object_errno(e: &ObjectError) -> i32 {
    match e {
        ObjectError::NotFound { .. } => libc::ENOENT,
        ObjectError::AccessDenied { .. } => libc::EACCES,
        // A changed object is EIO (not ESTALE): the reader must not retry into a mix.
        ObjectError::PreconditionFailed { .. }
        | ObjectError::NoSuchBucket { .. }
        | ObjectError::Unavailable { .. }
        | ObjectError::Unsupported { .. }
        | ObjectError::Other { .. } => libc::EIO,
    }
}
