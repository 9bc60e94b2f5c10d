//! What the rgrid store keeps about an artifact beyond its bytes: the `x-amz-meta-rgrid-*`
//! fields of its user metadata (the contract every rgrid tool that writes to the store
//! keeps: hash, compression, original size, kept mode and mtime), what its key says
//! (`executions/<id>/inputs|outputs/...`), what kind of artifact it is, and when an S3
//! lifecycle rule deletes it. (Its retention tier is an object tag: see `retention`.)
//! The write engine sets these fields; the file view, retention and xattrs read them, all
//! through this one module.
//!
//! The SHA-256 of the content is `x-amz-meta-rgrid-sha256` when it is known before the
//! upload starts. An upload streamed while its file was written learns it only at the
//! end, after the metadata is fixed: its metadata then carries `rgrid-sha256-in: tag`,
//! and once the upload is complete the object tag `rgrid-sha256` holds `<hex>@<ETag>`.
//! Readers take the tag's hash only for the ETag it names; a metadata rewrite (a copy)
//! of such an object writes the hash into the metadata.

use std::time::SystemTime;

use crate::object::ObjectHeaders;

/// Hex SHA-256 of the original (decompressed) content. Also the name of the object tag
/// that carries it for an upload streamed while it was written (see [`SHA256_IN_TAG`]).
pub const SHA256: &str = "rgrid-sha256";
/// Set (`tag`) on an object whose SHA-256 was not known when its metadata was fixed (a
/// multipart upload started while the file was still being written): the hash is then in
/// the object tag `rgrid-sha256`, as `<hex>@<ETag>`, set once the upload is complete.
/// Tagging copies no byte and makes no new version; the ETag in the value binds the hash
/// to the version it was computed for, so a tag that outlived its version (another
/// writer's upload completing in between) is ignored, never held against the new bytes.
pub const SHA256_IN_TAG: &str = "rgrid-sha256-in";
/// `gzip` when the stored bytes are the gzip-compressed content.
pub const COMPRESSION: &str = "rgrid-compression";
/// Size of the original content of a compressed object.
pub const ORIGINAL_SIZE: &str = "rgrid-original-size";
/// Modification time a tool set (`touch -d`, `cp -p`, `rsync -a`): seconds since the
/// epoch, with nanoseconds.
pub const MTIME: &str = "rgrid-mtime";
/// Permission bits a tool set (`chmod`), octal.
pub const MODE: &str = "rgrid-mode";
/// The target of a symbolic link; the object is the link (its body holds the target too).
pub const SYMLINK: &str = "rgrid-symlink";

/// The link target, if the object is a symbolic link: empty when the target is in the
/// body only (see [`symlink_metadata`]).
pub fn symlink_target(headers: &ObjectHeaders) -> Option<&str> {
    headers.user_metadata.get(SYMLINK).map(String::as_str)
}

/// The `rgrid-symlink` value for `target`: the target itself when S3 metadata can carry
/// it (printable ASCII, not long), else empty, and the body alone holds it.
pub fn symlink_metadata(target: &str) -> &str {
    let printable = target.bytes().all(|b| (0x20..0x7f).contains(&b));
    if printable && target.len() <= 1024 {
        target
    } else {
        ""
    }
}

/// File attributes kept in the object's metadata: what `stat` shows instead of the
/// store's LastModified and the mount's default mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeptAttrs {
    /// Permission bits.
    pub mode: Option<u16>,
    /// Modification time.
    pub mtime: Option<SystemTime>,
}

impl KeptAttrs {
    /// The attributes `headers` keep.
    pub fn of(headers: &ObjectHeaders) -> KeptAttrs {
        let meta = &headers.user_metadata;
        KeptAttrs {
            mode: meta
                .get(MODE)
                .and_then(|m| u16::from_str_radix(m.trim(), 8).ok())
                .map(|m| m & 0o7777),
            mtime: meta.get(MTIME).and_then(|t| parse_epoch(t)),
        }
    }

    /// These attributes, with those `other` sets overriding.
    pub fn merged(self, other: KeptAttrs) -> KeptAttrs {
        KeptAttrs {
            mode: other.mode.or(self.mode),
            mtime: other.mtime.or(self.mtime),
        }
    }

    /// Writes them into user metadata.
    pub fn store(&self, meta: &mut std::collections::HashMap<String, String>) {
        if let Some(mode) = self.mode {
            meta.insert(MODE.to_owned(), format!("{mode:04o}"));
        }
        if let Some(mtime) = self.mtime {
            if let Ok(d) = mtime.duration_since(SystemTime::UNIX_EPOCH) {
                let value = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
                meta.insert(MTIME.to_owned(), value);
            }
        }
    }
}

/// `1700000000.123456789` (or whole seconds).
fn parse_epoch(s: &str) -> Option<SystemTime> {
    let (secs, nanos) = s.trim().split_once('.').unwrap_or((s.trim(), "0"));
    let secs: u64 = secs.parse().ok()?;
    let digits = nanos.get(..nanos.len().min(9))?;
    let nanos: u32 = format!("{digits:0<9}").parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
}

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

/// What an artifact is (FEAT-004's artifact types), as `user.rgrid.kind` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// Source code and scripts.
    Code,
    /// Documents: text, markdown, PDF, office files.
    Document,
    /// Images.
    Image,
    /// Data: tables, JSON, arrays, archives of data.
    Data,
    /// Logs.
    Log,
    /// Anything else.
    Other,
}

const KINDS: &[(ArtifactKind, &[&str])] = &[
    (
        ArtifactKind::Code,
        &[
            "py", "rs", "js", "ts", "go", "java", "c", "h", "cc", "cpp", "hpp", "sh", "bash", "rb",
            "pl", "r", "jl", "scala", "kt", "swift", "ipynb", "toml", "ini", "cfg", "yaml", "yml",
            "sql", "lua", "php", "cs",
        ],
    ),
    (
        ArtifactKind::Document,
        &[
            "md", "txt", "pdf", "html", "htm", "rst", "doc", "docx", "odt", "rtf", "tex", "pptx",
            "xlsx",
        ],
    ),
    (
        ArtifactKind::Image,
        &[
            "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "tif", "tiff", "ico",
        ],
    ),
    (
        ArtifactKind::Data,
        &[
            "csv", "tsv", "json", "jsonl", "ndjson", "xml", "parquet", "arrow", "feather", "npy",
            "npz", "h5", "hdf5", "pkl", "pickle", "avro", "orc", "db", "sqlite", "bin", "gz",
            "zip", "tar", "zst",
        ],
    ),
    (ArtifactKind::Log, &["log", "out", "err"]),
];

impl ArtifactKind {
    /// The kind of the object at `key`, from its name, else its content type.
    pub fn of(key: &str, content_type: Option<&str>) -> ArtifactKind {
        let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
        if matches!(name.as_str(), "stdout" | "stderr") {
            return ArtifactKind::Log;
        }
        let by_name = name.rsplit_once('.').and_then(|(_, ext)| {
            KINDS
                .iter()
                .find(|(_, exts)| exts.contains(&ext))
                .map(|(kind, _)| *kind)
        });
        by_name.unwrap_or_else(|| Self::of_content_type(content_type.unwrap_or("")))
    }

    fn of_content_type(content_type: &str) -> ArtifactKind {
        let t = content_type.to_ascii_lowercase();
        if t.starts_with("image/") {
            ArtifactKind::Image
        } else if t.starts_with("text/x-") || t.contains("javascript") || t.contains("script") {
            ArtifactKind::Code
        } else if t.contains("json") || t.contains("csv") || t.contains("parquet") {
            ArtifactKind::Data
        } else if t.starts_with("text/") || t == "application/pdf" {
            ArtifactKind::Document
        } else {
            ArtifactKind::Other
        }
    }

    /// The name shown.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Code => "code",
            ArtifactKind::Document => "document",
            ArtifactKind::Image => "image",
            ArtifactKind::Data => "data",
            ArtifactKind::Log => "log",
            ArtifactKind::Other => "other",
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

/// Lowercase hex, as `x-amz-meta-rgrid-sha256` carries a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// When an S3 lifecycle rule of `days` deletes an object last modified at
/// `last_modified`: that many days later, rounded up to the next midnight UTC, as S3 (and
/// MinIO) count them.
pub fn lifecycle_expiry(last_modified: SystemTime, days: u32) -> Option<SystemTime> {
    const DAY: u64 = 86_400;
    let since_epoch = last_modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let due = since_epoch.checked_add(u64::from(days) * DAY)?;
    let midnight = due.div_ceil(DAY).checked_mul(DAY)?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(midnight))
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

/// The SHA-256 the content must have, if the object carries one: 64 lowercase hex
/// digits, as rgrid writes it. Anything else is no hash (and no xattr), not a hash that
/// every read would fail against.
pub fn sha256(headers: &ObjectHeaders) -> Option<&str> {
    let value = headers.user_metadata.get(SHA256)?;
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    (value.len() == 64 && value.bytes().all(|b| hex(&b))).then_some(value.as_str())
}

/// The MD5 of the content, where the ETag is one: a single-part object stored plain or
/// under SSE-S3 (S3's rule, which MinIO, Ceph and moto keep; rclone checks downloads by
/// it). Not a multipart ETag (`-N`), not one under KMS or a customer's key, and not an
/// ETag of any other form: those are no MD5, and a check against them would fail good
/// bytes.
pub fn etag_md5(etag: Option<&str>, headers: &ObjectHeaders) -> Option<String> {
    let value = etag?.trim_matches('"');
    let encrypted = headers.encryption.as_deref();
    let md5_kept = encrypted.is_none_or(|e| e.eq_ignore_ascii_case("AES256"));
    let hex = value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit());
    (md5_kept && hex).then(|| value.to_ascii_lowercase())
}

/// Whether the object's SHA-256 is to be read from its tags.
pub fn sha256_in_tag(headers: &ObjectHeaders) -> bool {
    sha256(headers).is_none()
        && headers
            .user_metadata
            .get(SHA256_IN_TAG)
            .is_some_and(|v| v == "tag")
}

/// The `rgrid-sha256` tag value for content hashing to `sha256` in version `etag`.
pub fn sha256_tag(sha256: &str, etag: &str) -> String {
    format!("{sha256}@{}", etag.trim_matches('"'))
}

/// Takes the SHA-256 from `tags` into `headers`, where every reader looks for it, if the
/// tag names version `etag`; the marker goes, so that a metadata rewrite of this version
/// (a copy) stores the hash itself. False when the tag is missing or names another
/// version: the content is then not verified.
pub fn adopt_tagged_sha256(
    headers: &mut ObjectHeaders,
    tags: &crate::object::Tags,
    etag: Option<&str>,
) -> bool {
    let Some((sha256, tagged_etag)) = tags.get(SHA256).and_then(|v| v.split_once('@')) else {
        return false;
    };
    let current = etag.map(|e| e.trim_matches('"'));
    if current != Some(tagged_etag) || sha256.len() != 64 {
        return false;
    }
    let meta = &mut headers.user_metadata;
    meta.remove(SHA256_IN_TAG);
    meta.insert(SHA256.to_owned(), sha256.to_ascii_lowercase());
    true
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

/// The latest time RFC 3339 (and an HTTP date) can write: 9999-12-31T23:59:59Z.
pub fn last_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799)
}

/// An RFC 3339 time, as `user.rgrid.expires_at` shows it: `2026-12-22T10:00:00Z`.
/// Times RFC 3339 cannot write (before 1970 here, after 9999) are clamped, not a panic.
pub fn format_time(t: SystemTime) -> String {
    let t = t.clamp(SystemTime::UNIX_EPOCH, last_time());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 time (any offset, fractional seconds allowed) between 1970 and
/// the end of 9999.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let t = humantime::parse_rfc3339_weak(s.trim())
        .ok()
        .or_else(|| parse_with_offset(s.trim()))?;
    (SystemTime::UNIX_EPOCH..=last_time())
        .contains(&t)
        .then_some(t)
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
pub(crate) mod proptests;
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_tagged_sha256_counts_only_for_its_version() {
        let sha = "ab".repeat(32);
        let mut headers = ObjectHeaders::default();
        headers
            .user_metadata
            .insert(SHA256_IN_TAG.into(), "tag".into());
        assert!(sha256_in_tag(&headers));
        let tags = [(SHA256.to_owned(), sha256_tag(&sha, "\"e1-2\""))].into();
        assert!(!adopt_tagged_sha256(
            &mut headers.clone(),
            &tags,
            Some("\"e2-2\"")
        ));
        assert!(!adopt_tagged_sha256(
            &mut headers.clone(),
            &Default::default(),
            Some("e1-2")
        ));
        assert!(adopt_tagged_sha256(&mut headers, &tags, Some("\"e1-2\"")));
        assert_eq!(sha256(&headers), Some(sha.as_str()));
        assert!(
            !sha256_in_tag(&headers),
            "the marker goes with the adoption"
        );
    }

    #[test]
    fn a_sha256_that_is_not_64_lowercase_hex_digits_is_no_hash() {
        let with = |value: &str| ObjectHeaders {
            user_metadata: [(SHA256.to_owned(), value.to_owned())].into(),
            ..ObjectHeaders::default()
        };
        let good = "0f".repeat(32);
        assert_eq!(sha256(&with(&good)), Some(good.as_str()));
        for bad in [
            "",
            "abc",
            &"0F".repeat(32),
            &"0g".repeat(32),
            &"0f".repeat(33),
        ] {
            assert_eq!(sha256(&with(bad)), None, "{bad:?}");
        }
    }

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
    fn kinds_come_from_the_name_then_the_content_type() {
        let kind = |key, ct| ArtifactKind::of(key, ct).name();
        assert_eq!(kind("out/train.py", None), "code");
        assert_eq!(kind("out/REPORT.md", None), "document");
        assert_eq!(kind("out/plot.png", None), "image");
        assert_eq!(kind("out/table.csv", None), "data");
        assert_eq!(kind("out/run.log", None), "log");
        assert_eq!(kind("out/stderr", None), "log");
        assert_eq!(kind("out/blob", Some("image/webp")), "image");
        assert_eq!(kind("out/blob", Some("application/octet-stream")), "other");
        assert_eq!(kind("out/noext", None), "other");
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
    fn kept_attributes_round_trip_through_metadata() {
        let kept = KeptAttrs {
            mode: Some(0o640),
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789)),
        };
        let mut headers = ObjectHeaders::default();
        kept.store(&mut headers.user_metadata);
        assert_eq!(headers.user_metadata[MODE], "0640");
        assert_eq!(KeptAttrs::of(&headers), kept);
        headers
            .user_metadata
            .insert(MTIME.into(), "1600000000".into());
        headers
            .user_metadata
            .insert(MODE.into(), "not octal".into());
        let parsed = KeptAttrs::of(&headers);
        assert_eq!(parsed.mode, None);
        assert_eq!(
            parsed.mtime,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000))
        );
        headers
            .user_metadata
            .insert(MTIME.into(), "99999999999999999999".into());
        assert_eq!(KeptAttrs::of(&headers).mtime, None, "no panic on overflow");
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
        assert_eq!(parse_time("1970-01-01T00:00:00+01:00"), None, "before 1970");
        assert_eq!(
            format_time(SystemTime::UNIX_EPOCH - Duration::from_secs(9)),
            "1970-01-01T00:00:00Z"
        );
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(format_time(far), "9999-12-31T23:59:59Z");
        assert_eq!(parse_time("2026-12-22T10:00:00+0"), None);
    }
}
