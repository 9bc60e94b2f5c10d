//! `GzipReader`: a gzip-stored object read as its decompressed bytes. The compressed
//! stream comes in order through the read engine (so it gets sequential read-ahead), goes
//! through one decoder (all gzip members, as `gzip -d` does), and the output is appended
//! to a decode file under the cache directory, unlinked at once. Any read, forwards or
//! backwards, is served from that file once the decoder has got that far: memory stays
//! constant, and random reads cost one decode in all. The decoder's output is hashed on
//! the way, so the SHA-256 is checked however the reader moves. With the object cache on,
//! the decode file is the cache's: a decode that ends and checks out is the object's
//! decoded entry, and the next open reads it with no GET and no decode.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;
use flate2::write::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::ViewError;
use crate::cache::DecodeTarget;
use crate::readahead::ReadAhead;

/// Compressed bytes asked of the read engine at a time.
const CHUNK: u32 = 1 << 20;

/// Where decoded bytes go: the decode file, and the hash.
#[derive(Debug)]
struct Decoded {
    file: File,
    len: u64,
    hasher: Sha256,
}

impl Write for Decoded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(buf, self.len)?;
        self.len += buf.len() as u64;
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the decoded content must be, from the object's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Expected {
    /// `x-amz-meta-rgrid-original-size`.
    pub size: Option<u64>,
    /// `x-amz-meta-rgrid-sha256`, hex.
    pub sha256: Option<String>,
}

/// A reader of the decompressed content of one object version.
#[derive(Debug)]
pub struct GzipReader {
    key: String,
    source: ReadAhead,
    /// Compressed bytes fed to the decoder so far.
    fed: u64,
    decoder: MultiGzDecoder<Decoded>,
    expected: Expected,
    /// The decoded length, once the stream ended and checked out.
    finished: Option<u64>,
    /// A failure is final: every later read gets it again.
    failed: Option<String>,
    /// The cache entry the decode file becomes once the stream checks out.
    target: Option<DecodeTarget>,
    /// `--verify-first`: no byte is served before the whole stream is decoded and
    /// checked (its SHA-256, else each member's CRC-32).
    checked_first: bool,
}

impl GzipReader {
    /// A reader of `source` (the compressed object `key`), decoding into the cache's file
    /// `target` if given, else into a new file under `dir`.
    pub fn new(
        key: String,
        source: ReadAhead,
        dir: &Path,
        expected: Expected,
        target: Option<(DecodeTarget, File)>,
    ) -> Result<GzipReader, ViewError> {
        let (target, file) = match target {
            Some((target, file)) => (Some(target), file),
            None => (None, decode_file(dir).map_err(ViewError::Io)?),
        };
        let sink = Decoded {
            file,
            len: 0,
            hasher: Sha256::new(),
        };
        Ok(GzipReader {
            key,
            source,
            fed: 0,
            decoder: MultiGzDecoder::new(sink),
            expected,
            finished: None,
            failed: None,
            target,
            checked_first: false,
        })
    }

    /// With `on`, serves nothing before the whole stream has checked out.
    pub fn checked_first(mut self, on: bool) -> GzipReader {
        self.checked_first = on;
        self
    }

    /// Whether the decode has stopped for good (corrupt stream, decode file error).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Up to `len` decompressed bytes at `offset`; the decoded length once known.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<(Bytes, Option<u64>), ViewError> {
        let end = offset.saturating_add(u64::from(len));
        while self.finished.is_none() && self.wants_more(end) {
            if let Some(why) = &self.failed {
                return Err(self.corrupt(why.clone()));
            }
            // A far seek decodes for seconds on one of the runtime's few threads: give
            // it back between chunks, so that other files' reads and uploads go on.
            tokio::task::yield_now().await;
            if let Err(e) = self.pump().await {
                // Only a failed fetch may be tried again: after anything else the
                // decoder's state is unknown, and no byte it made later is served.
                if !matches!(e, ViewError::Read(_)) {
                    self.failed = Some(e.to_string());
                }
                return Err(e);
            }
        }
        let available = self.decoder.get_ref().len;
        let end = end.min(available);
        if offset >= end {
            return Ok((Bytes::new(), self.finished));
        }
        let mut buf = vec![0; (end - offset) as usize];
        self.decoder
            .get_ref()
            .file
            .read_exact_at(&mut buf, offset)
            .map_err(ViewError::Io)?;
        Ok((Bytes::from(buf), self.finished))
    }

    /// Whether bytes up to `end` are not decoded yet, or all are and the stream's end
    /// has not been checked: a reader that stops at exactly the promised size gets the
    /// check too.
    fn wants_more(&self, end: u64) -> bool {
        let decoded = self.decoder.get_ref().len;
        self.checked_first
            || decoded < end
            || self.expected.size.is_some_and(|size| decoded >= size)
    }

    /// Feeds the decoder one more chunk, or finishes and checks the stream at its end.
    async fn pump(&mut self) -> Result<(), ViewError> {
        let chunk = self.source.read(self.fed, CHUNK).await?;
        if chunk.is_empty() {
            return self.finish();
        }
        self.fed += chunk.len() as u64;
        self.decoder
            .write_all(&chunk)
            .map_err(|e| self.decode_error(e))?;
        let decoded = self.decoder.get_ref().len;
        match self.expected.size {
            // More than promised: corrupt, or a bomb; stop before it fills the disk.
            Some(size) if decoded > size => Err(self.corrupt(format!(
                "decompresses past the {size} bytes its metadata says"
            ))),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), ViewError> {
        self.decoder
            .try_finish()
            .map_err(|e| self.decode_error(e))?;
        let decoded = self.decoder.get_ref();
        if let Some(size) = self.expected.size.filter(|s| *s != decoded.len) {
            let why = format!(
                "decompressed to {} bytes, metadata says {size}",
                decoded.len
            );
            return Err(self.corrupt(why));
        }
        let actual = super::hex(&decoded.hasher.clone().finalize());
        if let Some(expected) = &self.expected.sha256 {
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(ViewError::Mismatch {
                    key: self.key.clone(),
                    why: format!("sha256 {actual}, metadata says {expected}"),
                });
            }
        }
        self.finished = Some(decoded.len);
        if let Some(target) = self.target.take() {
            target.publish(decoded.len, actual);
        }
        Ok(())
    }

    /// A decoder error is corrupt data, except a failed write to the decode file.
    fn decode_error(&self, e: std::io::Error) -> ViewError {
        match e.kind() {
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                self.corrupt(format!("not a valid gzip stream: {e}"))
            }
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::WriteZero => {
                self.corrupt(format!("gzip stream truncated: {e}"))
            }
            _ if e.raw_os_error().is_some() => ViewError::Io(e),
            _ => self.corrupt(format!("gzip: {e}")),
        }
    }

    fn corrupt(&self, why: String) -> ViewError {
        ViewError::Corrupt {
            key: self.key.clone(),
            why,
        }
    }
}

/// A new file under `dir` that no other process can find: unlinked as soon as it is open.
pub(super) fn decode_file(dir: &Path) -> std::io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("decode-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use proptest::prelude::*;

    use super::*;
    use crate::artifact::{sha256_hex, KeptAttrs};
    use crate::namespace::{InodeKind, InodeNo, Node};
    use crate::object::{MemoryClient, ObjectHeaders, ObjectId};
    use crate::readahead::{ReadConfig, ReadEngine};
    use crate::view::decoded_size::gzip_trailer_size;
    use crate::view::gzip_decoded_size;

    /// One gzip member of `data`.
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// An engine over a bucket holding `stored` as `k.gz`, and that version's ETag.
    fn engine(stored: &[u8]) -> (Arc<ReadEngine>, String) {
        let client = MemoryClient::new();
        let etag = client.insert("k.gz", stored.to_vec(), ObjectHeaders::default());
        (
            ReadEngine::new(Arc::new(client), ReadConfig::default()),
            etag,
        )
    }

    /// Decodes `stored` front to back, as a reader of the object expecting `expected`
    /// would: the content once the stream ended and checked out, or the first error.
    async fn decode(stored: &[u8], expected: Expected, dir: &Path) -> Result<Vec<u8>, ViewError> {
        let (engine, etag) = engine(stored);
        let source = engine.open(
            ObjectId::new("k.gz".into(), Some(etag)),
            stored.len() as u64,
        );
        let mut reader = GzipReader::new("k.gz".into(), source, dir, expected, None)?;
        let mut out = Vec::new();
        loop {
            let (chunk, size) = reader.read(out.len() as u64, 64 << 10).await?;
            if chunk.is_empty() {
                // An empty read past the decoded bytes comes only once the end is checked.
                assert_eq!(size, Some(out.len() as u64), "the end, checked");
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// The trailer size of the model: the last four bytes of the first `size` (what the
    /// listing says the object holds), little-endian, if they claim at least `size`.
    fn trailer_model(stored: &[u8], size: u64) -> Option<u64> {
        let end = usize::try_from(size)
            .ok()
            .filter(|&e| e >= 4 && e <= stored.len())?;
        let tail: [u8; 4] = stored[end - 4..end].try_into().ok()?;
        let claimed = u64::from(u32::from_le_bytes(tail));
        (claimed >= size).then_some(claimed)
    }

    /// The node of `k.gz`'s version `etag`, listed at `stored_size`.
    fn node(etag: String, stored_size: u64) -> Node {
        Node {
            ino: InodeNo(2),
            kind: InodeKind::File,
            key: "k.gz".into(),
            size: stored_size,
            stored_size,
            mtime: SystemTime::UNIX_EPOCH,
            etag: Some(etag),
            read_only: false,
            unlinked: false,
            headers: None,
            kept: KeptAttrs::default(),
        }
    }

    /// `--verify-first`: a damaged stream gives the first read an error where a
    /// streaming reader gives bytes; a good one serves the same bytes.
    #[test]
    fn checked_first_serves_nothing_of_a_damaged_stream() {
        // Incompressible, so that the flip lies past the first chunk fed to the decoder.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..3 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let good = gzip(&data);
        let mut bad = good.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x01;
        let dir = tempfile::tempdir().unwrap();
        let first = |stored: &[u8], checked_first: bool| {
            let (engine, etag) = engine(stored);
            let id = ObjectId::new("k.gz".into(), Some(etag));
            let source = engine.open(id, stored.len() as u64);
            let reader =
                GzipReader::new("k.gz".into(), source, dir.path(), Expected::default(), None);
            let mut reader = reader.unwrap().checked_first(checked_first);
            runtime()
                .block_on(reader.read(0, 4096))
                .map(|(bytes, _)| bytes)
        };
        assert_eq!(first(&bad, false).unwrap()[..], data[..4096], "streamed");
        assert!(first(&bad, true).is_err_and(|e| e.is_bad_content()));
        assert_eq!(first(&good, true).unwrap()[..], data[..4096]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any stored bytes (not gzip, a gzip header and noise, a stream and trailing
        /// junk), with or without a size in the metadata: the decode ends in the content
        /// (of exactly that size) or in an error about the content, never in a panic or
        /// a read that never ends.
        #[test]
        fn any_stored_bytes_decode_or_are_refused(
            stored in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..600),
                proptest::collection::vec(any::<u8>(), 0..600)
                    .prop_map(|noise| [&[0x1f, 0x8b, 0x08][..], &noise[..]].concat()),
                (proptest::collection::vec(any::<u8>(), 0..600), proptest::collection::vec(any::<u8>(), 0..40))
                    .prop_map(|(data, junk)| [gzip(&data), junk].concat()),
            ],
            size in proptest::option::of(0u64..2000),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let expected = Expected { size, sha256: None };
            match runtime().block_on(decode(&stored, expected, dir.path())) {
                Ok(out) => prop_assert!(size.is_none_or(|size| size == out.len() as u64)),
                Err(e) => prop_assert!(e.is_bad_content(), "{e}"),
            }
        }

        /// A stream of any content in one or more members, with a byte changed or its end
        /// cut off or intact: with its size and SHA-256 known, a decode that ends without
        /// an error gave exactly the content, and an intact stream always does.
        #[test]
        fn a_damaged_stream_never_passes_for_the_content(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            members in 1usize..4,
            flip in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let part = data.len().div_ceil(members).max(1);
            let mut stored: Vec<u8> = data.chunks(part).flat_map(gzip).collect();
            if stored.is_empty() {
                stored = gzip(&[]);
            }
            let whole = stored.len();
            if let Some((at, mask)) = flip {
                let i = at.index(whole);
                stored[i] ^= mask;
            }
            if let Some(at) = cut {
                stored.truncate(at.index(whole + 1));
            }
            let damaged = flip.is_some() || stored.len() < whole;
            let dir = tempfile::tempdir().unwrap();
            let expected = Expected {
                size: Some(data.len() as u64),
                sha256: Some(sha256_hex(&data)),
            };
            match runtime().block_on(decode(&stored, expected, dir.path())) {
                Ok(out) => prop_assert!(out == data, "other bytes passed the checks"),
                Err(e) => {
                    prop_assert!(e.is_bad_content(), "{e}");
                    prop_assert!(damaged, "an intact stream failed: {e}");
                }
            }
        }

        /// A stream that decodes to more or fewer bytes than its metadata says is refused.
        #[test]
        fn a_size_other_than_the_metadata_is_refused(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            size in 0u64..4000,
        ) {
            prop_assume!(size != data.len() as u64);
            let dir = tempfile::tempdir().unwrap();
            let expected = Expected { size: Some(size), sha256: None };
            let result = runtime().block_on(decode(&gzip(&data), expected, dir.path()));
            prop_assert!(result.is_err_and(|e| e.is_bad_content()));
        }

        /// Any object, and any size a listing may say it has (stale ones included, and
        /// around 4 GiB): the trailer size is its last four bytes when they claim at least
        /// the stored size, else none; a gzip stream's is its content's size or none.
        #[test]
        fn the_trailer_size_is_the_last_four_bytes_or_none(
            stored in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(any::<u8>(), 0..3000).prop_map(|data| gzip(&data)),
            ],
            listed in proptest::option::of(prop_oneof![
                0u64..80,
                Just((1u64 << 32) - 1),
                Just(1u64 << 32),
                Just(u64::MAX),
            ]),
        ) {
            let (engine, etag) = engine(&stored);
            let stored_size = listed.unwrap_or(stored.len() as u64);
            let node = node(etag, stored_size);
            let got = runtime().block_on(gzip_trailer_size(&engine, &node)).ok().flatten();
            let expected = if stored_size >= 1 << 32 {
                None
            } else {
                trailer_model(&stored, stored_size)
            };
            prop_assert_eq!(got, expected);
        }

        /// Any stored stream small enough to be decoded at lookup (one member, several,
        /// incompressible, trailing junk, noise): the size worked out at lookup is what
        /// a reader decodes to, whenever the reader gets the content.
        #[test]
        fn the_size_at_lookup_of_a_small_stream_is_what_a_read_returns(
            stored in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..600),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..4)
                    .prop_map(|members| members.iter().flat_map(|m| gzip(m)).collect()),
                (proptest::collection::vec(any::<u8>(), 0..600), proptest::collection::vec(any::<u8>(), 0..40))
                    .prop_map(|(data, junk)| [gzip(&data), junk].concat()),
            ],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let read = runtime().block_on(decode(&stored, Expected::default(), dir.path()));
            let (engine, etag) = engine(&stored);
            let node = node(etag, stored.len() as u64);
            let looked_up = runtime().block_on(gzip_decoded_size(&engine, &node)).unwrap();
            if let Ok(content) = read {
                prop_assert_eq!(looked_up, Some(content.len() as u64));
            }
        }
    }
}
