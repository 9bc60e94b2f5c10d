//! Archive storage classes in the embedded store, as S3 has them (FEAT-004's ARCHIVED
//! state): an object PUT as GLACIER or DEEP_ARCHIVE answers HEAD with its class but GET
//! with InvalidObjectState until RestoreObject makes a readable copy for some days. The
//! restore is ready at once (as moto's), where S3 takes hours.

use std::time::{Duration, SystemTime};

use s3s::dto::{self, Timestamp, TimestampFormat};
use s3s::{s3_error, S3Result};

use super::{DiskStore, Entry};

const ARCHIVE_CLASSES: &[&str] = &[dto::StorageClass::GLACIER, dto::StorageClass::DEEP_ARCHIVE];

/// The class an upload asks for, `None` for STANDARD.
pub(super) fn class_of(class: Option<dto::StorageClass>) -> Option<String> {
    class
        .map(|c| c.as_str().to_owned())
        .filter(|c| c != dto::StorageClass::STANDARD)
}

/// Whether `entry` is in an archive class.
fn in_archive(entry: &Entry) -> bool {
    let class = entry.storage_class.as_deref();
    class.is_some_and(|c| ARCHIVE_CLASSES.contains(&c))
}

/// Fails a GET of an archived object without a readable restore.
pub(super) fn check_readable(entry: &Entry) -> S3Result<()> {
    let archived = in_archive(entry);
    let restored = entry.restored_until.is_some_and(|t| t > SystemTime::now());
    if archived && !restored {
        return Err(s3_error!(
            InvalidObjectState,
            "The operation is not valid for the object's storage class"
        ));
    }
    Ok(())
}

/// The `x-amz-restore` value of a restored object.
pub(super) fn restore_header(entry: &Entry) -> Option<String> {
    let until = entry.restored_until?;
    let mut date = Vec::new();
    Timestamp::from(until)
        .format(TimestampFormat::HttpDate, &mut date)
        .ok()?;
    let date = String::from_utf8(date).ok()?;
    Some(format!("ongoing-request=\"false\", expiry-date=\"{date}\""))
}

impl DiskStore {
    /// RestoreObject: a readable copy of archived `key` for `days` from now.
    pub(super) fn restore(&self, bucket: &str, key: &str, days: i32) -> S3Result<()> {
        let days = u64::try_from(days)
            .ok()
            .filter(|d| (1..=36_525).contains(d))
            .ok_or_else(|| s3_error!(InvalidArgument, "Days must be a positive number"))?;
        let index = self.bucket(bucket)?;
        let mut index = index.write().unwrap_or_else(|e| e.into_inner());
        let entry = index.get_mut(key).ok_or_else(|| s3_error!(NoSuchKey))?;
        if !in_archive(entry) {
            return Err(s3_error!(
                InvalidObjectState,
                "Restore is not allowed for the object's current storage class"
            ));
        }
        entry.restored_until = Some(SystemTime::now() + Duration::from_secs(days * 86_400));
        self.write_sidecar(bucket, entry)
    }
}
