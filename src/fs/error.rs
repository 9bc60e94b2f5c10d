//! `FsError` and the one table that turns errors into errnos and log levels.

use thiserror::Error;

use crate::namespace::NamespaceError;
use crate::object::ObjectError;
use crate::readahead::ReadError;

/// A failed filesystem operation.
#[derive(Debug, Error)]
pub enum FsError {
    /// Namespace failure.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// Read failure.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A change on a read-only mount or place.
    #[error("read-only file system")]
    ReadOnly,
    /// The kernel named a handle that is not open.
    #[error("unknown file handle {0}")]
    BadHandle(u64),
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
                NamespaceError::Object(e) => object_errno(e),
            },
            FsError::Read(e) => match e {
                ReadError::Object(e) => object_errno(e),
                ReadError::Truncated { .. } | ReadError::Stalled { .. } | ReadError::Task(_) => {
                    libc::EIO
                }
            },
            FsError::ReadOnly => libc::EROFS,
            FsError::BadHandle(_) => libc::EBADF,
        }
    }

    /// How loudly to log it.
    pub fn severity(&self) -> Severity {
        match self.errno() {
            libc::ENOENT | libc::EROFS | libc::ENOTDIR | libc::EISDIR => Severity::Debug,
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
        | ObjectError::Other { .. } => libc::EIO,
    }
}
