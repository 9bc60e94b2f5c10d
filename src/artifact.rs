//! What the rgrid store keeps about an artifact beyond its bytes: the `x-amz-meta-rgrid-*`
//! fields of its user metadata (the store's contract, see shared/seeds), and what its key
//! says (`executions/<id>/inputs|outputs/...`). The write engine sets these fields; the
//! file view, retention and xattrs read them, all through this one module.

use std::time::SystemTime;

use crate::object::ObjectHeaders;

/// Hex SHA-256 of the original (decompressed) content.
pub const SHA256: &str = "rgrid-sha256";
/// `gzip` when the stored bytes are the gzip-compressed content.
pub const COMPRESSION: &str = "rgrid-compression";
/// Size of the original content of a compressed object.
pub const ORIGINAL_SIZE: &str = "rgrid-original-size";
/// RFC 3339 time at which the object is to be deleted, overriding the bucket's policy.
pub const EXPIRES_AT: &str = "rgrid-expires-at";
/// Days the object is kept, as last set through `user.rgrid.retention_days`.
pub const RETENTION_DAYS: &str = "rgrid-retention-days";

/// How the stored bytes encode the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// Stored gzip-compressed.
    Gzip,
}

impl Compression {
    /// The name shown in `user.rgrid.compression`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }
}

/// Input or output of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactType {
    /// Under `executions/<id>/inputs/`.
    Input,
    /// Under `executions/<id>/outputs/`.
    Output,
}

impl ArtifactType {
    /// The name shown in `user.rgrid.artifact_type`.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactType::Input => "input",
            ArtifactType::Output => "output",
        }
    }
}

/// File formats by extension: content type, and whether it is text (which the store
/// keeps gzip-compressed when large). Formats not listed are binary.
const FORMATS: &[(&str, &str, bool)] = &[
    ("csv", "text/csv", true),
    ("tsv", "text/tab-separated-values", true),
    ("txt", "text/plain", true),
    ("log", "text/plain", true),
    ("md", "text/markdown", true),
    ("json", "application/json", true),
    ("jsonl", "application/x-ndjson", true),
    ("ndjson", "application/x-ndjson", true),
    ("xml", "application/xml", true),
    ("html", "text/html", true),
    ("htm", "text/html", true),
    ("yaml", "application/yaml", true),
    ("yml", "application/yaml", true),
    ("sql", "application/sql", true),
    ("svg", "image/svg+xml", true),
    ("png", "image/png", false),
    ("jpg", "image/jpeg", false),
    ("jpeg", "image/jpeg", false),
    ("gz", "application/gzip", false),
    ("zip", "application/zip", false),
    ("pdf", "application/pdf", false),
    ("parquet", "application/vnd.apache.parquet", false),
];

fn format(key: &str) -> Option<&'static (&'static str, &'static str, bool)> {
    let name = key.rsplit('/').next()?;
    let (_, ext) = name.rsplit_once('.')?;
    FORMATS.iter().find(|(e, _, _)| e.eq_ignore_ascii_case(ext))
}

/// Content type of an object, from its file name.
pub fn content_type(key: &str) -> &'static str {
    format(key).map_or("application/octet-stream", |(_, t, _)| t)
}

/// Whether the file name says text (csv, json, log, ...), which compresses well.
pub fn is_text(key: &str) -> bool {
    format(key).is_some_and(|(_, _, text)| *text)
}

/// The execution a key (or prefix) belongs to, and whether it is an input or an output.
pub fn execution_of(key: &str) -> Option<(&str, Option<ArtifactType>)> {
    let rest = key.strip_prefix("executions/")?;
    let (id, rest) = rest.split_once('/')?;
    if id.is_empty() {
        return None;
    }
    let kind = if rest.starts_with("inputs/") {
        Some(ArtifactType::Input)
    } else if rest.starts_with("outputs/") {
        Some(ArtifactType::Output)
    } else {
        None
    };
    Some((id, kind))
}

/// The SHA-256 the content must have, if the object carries one.
pub fn sha256(headers: &ObjectHeaders) -> Option<&str> {
    headers.user_metadata.get(SHA256).map(String::as_str)
}

/// How the object's bytes are stored.
pub fn compression(headers: &ObjectHeaders) -> Compression {
    let ours = headers.user_metadata.get(COMPRESSION);
    let encoding = headers.content_encoding.as_deref();
    let gzip = |v: &str| v.trim().eq_ignore_ascii_case("gzip");
    if ours.is_some_and(|v| gzip(v)) || encoding.is_some_and(gzip) {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// The decompressed size recorded at upload, if any.
pub fn original_size(headers: &ObjectHeaders) -> Option<u64> {
    headers
        .user_metadata
        .get(ORIGINAL_SIZE)?
        .trim()
        .parse()
        .ok()
}

/// The object's own expiry, if it has a valid one.
pub fn expires_at(headers: &ObjectHeaders) -> Option<SystemTime> {
    parse_time(headers.user_metadata.get(EXPIRES_AT)?)
}

/// The retention in days set on the object, if any.
pub fn retention_days(headers: &ObjectHeaders) -> Option<u32> {
    headers
        .user_metadata
        .get(RETENTION_DAYS)?
        .trim()
        .parse()
        .ok()
}

/// An RFC 3339 time, as `user.rgrid.expires_at` shows it: `2026-12-22T10:00:00Z`.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 time (any offset, fractional seconds allowed).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim())
        .ok()
        .or_else(|| parse_with_offset(s.trim()))
}

/// `2026-12-22T10:00:00+02:00`: humantime takes only UTC, so apply the offset here.
fn parse_with_offset(s: &str) -> Option<SystemTime> {
    let split = s.len().checked_sub(6)?;
    let (local, offset) = (s.get(..split)?, s.get(split..)?);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let seconds = (h.parse::<u64>().ok()? * 60 + m.parse::<u64>().ok()?) * 60;
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    let delta = std::time::Duration::from_secs(seconds);
    if sign > 0 {
        local.checked_sub(delta)
    } else {
        local.checked_add(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_name_their_execution() {
        assert_eq!(
            execution_of("executions/e1/outputs/a/b.csv"),
            Some(("e1", Some(ArtifactType::Output)))
        );
        assert_eq!(
            execution_of("executions/e1/inputs/"),
            Some(("e1", Some(ArtifactType::Input)))
        );
        assert_eq!(execution_of("executions/e1/"), Some(("e1", None)));
        assert_eq!(execution_of("executions/e1"), None);
        assert_eq!(execution_of("executions//x"), None);
        assert_eq!(execution_of("other/e1/outputs/x"), None);
    }

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(content_type("a/b/report.JSON"), "application/json");
        assert_eq!(content_type("image.png"), "image/png");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("dir.d/file"), "application/octet-stream");
        assert!(is_text("out/table.CSV") && is_text("run.log"));
        assert!(!is_text("plot.png") && !is_text("data.parquet") && !is_text("x.csv.gz"));
    }

    #[test]
    fn gzip_is_our_field_or_content_encoding() {
        let mut h = ObjectHeaders::default();
        assert_eq!(compression(&h), Compression::None);
        h.content_encoding = Some("GZIP".into());
        assert_eq!(compression(&h), Compression::Gzip);
        let mut h = ObjectHeaders::default();
        h.user_metadata.insert(COMPRESSION.into(), "gzip".into());
        h.user_metadata.insert(ORIGINAL_SIZE.into(), "1234".into());
        assert_eq!(
            (compression(&h), original_size(&h)),
            (Compression::Gzip, Some(1234))
        );
    }

    #[test]
    fn times_round_trip_and_offsets_apply() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(parse_time(&format_time(t)), Some(t));
        let utc = parse_time("2026-12-22T10:00:00Z").unwrap();
        assert_eq!(parse_time("2026-12-22T12:00:00+02:00"), Some(utc));
        assert_eq!(parse_time("2026-12-22T09:30:00-00:30"), Some(utc));
        assert_eq!(
            parse_time("2026-12-22T10:00:00.500Z").map(|t| t > utc),
            Some(true)
        );
        assert_eq!(parse_time("tomorrow"), None);
        assert_eq!(parse_time("2026-12-22T10:00:00+0"), None);
    }
}
