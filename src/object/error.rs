//! `ObjectError`: remote failures classified by what the caller can do about them.

use thiserror::Error;

/// A failed object-store call, with the key (or bucket) it concerned.
#[derive(Debug, Error)]
pub enum ObjectError {
    /// The key does not exist.
    #[error("{key}: no such key")]
    NotFound {
        /// Key asked for.
        key: String,
    },
    /// The bucket does not exist.
    #[error("bucket {bucket} does not exist")]
    NoSuchBucket {
        /// Bucket asked for.
        bucket: String,
    },
    /// The object is no longer the version this reader started with.
    #[error("{key}: changed in the store while being read")]
    PreconditionFailed {
        /// Key asked for.
        key: String,
    },
    /// Credentials were refused.
    #[error("access denied for {target}: {message}")]
    AccessDenied {
        /// Key or bucket.
        target: String,
        /// What the store said.
        message: String,
    },
    /// No answer: the connection failed, or the store did not answer within the request
    /// timeout. The store counts as unreachable until it answers again.
    #[error("store unreachable for {target}: {message}")]
    Unreachable {
        /// Key or bucket.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The store answered with a failure (5xx) after retries, or a body broke off.
    #[error("store unavailable for {target}: {message}")]
    Unavailable {
        /// Key or bucket.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The server does not implement the operation (e.g. lifecycle configuration).
    #[error("{target}: the server does not support this: {message}")]
    Unsupported {
        /// Key or bucket.
        target: String,
        /// What the store said.
        message: String,
    },
    /// Anything else the store said no to.
    #[error("store error for {target}: {message}")]
    Other {
        /// Key or bucket.
        target: String,
        /// What the store said.
        message: String,
    },
}

impl ObjectError {
    /// True when the same call may succeed later (the SDK has already retried it).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ObjectError::Unavailable { .. } | ObjectError::Unreachable { .. }
        )
    }
}
