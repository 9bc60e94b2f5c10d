//! The file view: what a reader of an object sees. A plain object is its bytes, read
//! through the read engine; a gzip-stored one (`rgrid-compression: gzip` or
//! `Content-Encoding: gzip`) is its decompressed bytes, through `GzipReader`. Either
//! way, content read front to back is checked against the object's `rgrid-sha256`: a
//! mismatch, or a corrupt stream, is an error for the read that finds it and every read
//! after it, never bytes passed off as good. A small plain object is checked whole before
//! its first byte is served, and with `--verify-first` every checked object is.

mod decoded_size;
mod gzip;
mod verify;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use thiserror::Error;

use crate::artifact::{self, Compression};
use crate::cache::{Fill, ObjectCache};
use crate::namespace::Node;
use crate::object::{ObjectError, ObjectId};
use crate::readahead::{ReadAhead, ReadEngine, ReadError};
pub use decoded_size::gzip_decoded_size;
use gzip::{Expected, GzipReader};
pub use verify::ContentHash;
use verify::{Verdict, Verifier};

/// What can go wrong between the object and the reader.
#[derive(Debug, Error)]
pub enum ViewError {
    /// Fetching the stored bytes failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The stored bytes are not what their metadata says (bad gzip, wrong size).
    #[error("{key}: corrupt: {why}")]
    Corrupt {
        /// Object key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The content does not hash to its `rgrid-sha256`.
    #[error("{key}: integrity check failed: {why}")]
    Mismatch {
        /// Object key.
        key: String,
        /// Expected and actual digests.
        why: String,
    },
    /// The local decode file.
    #[error("decode file: {0}")]
    Io(std::io::Error),
}

impl ViewError {
    /// True when the store no longer has the version being read: it answered with
    /// another, or none.
    pub fn is_version_gone(&self) -> bool {
        matches!(
            self,
            ViewError::Read(ReadError::Object(
                ObjectError::PreconditionFailed { .. } | ObjectError::NotFound { .. }
            ))
        )
    }

    /// True when the object's content is bad (as opposed to the way to it failing).
    pub fn is_bad_content(&self) -> bool {
        matches!(self, ViewError::Corrupt { .. } | ViewError::Mismatch { .. })
    }
}

/// Bytes of one read, and the content's full size once the reader has learned it.
#[derive(Debug)]
pub struct Chunk {
    /// The bytes.
    pub data: Bytes,
    /// The decoded size, known at the end of a gzip stream.
    pub size: Option<u64>,
}

// One per open handle, and the handle is boxed already: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    Plain(Plain),
    Gzip(Arc<SharedGzip>),
    /// Content on local disk: a spool closed here and still waiting for its upload
    /// (write-back), or an object cache entry. Either stays readable through this handle
    /// even once it is removed.
    Local(std::fs::File),
}

type SharedGzip = tokio::sync::Mutex<GzipReader>;

/// A reader of plain content.
#[derive(Debug)]
struct Plain {
    reader: ReadAhead,
    verifier: Option<Verifier>,
    /// What is read goes into the object cache too, if it can.
    fill: Option<Fill>,
    /// The whole content, checked before its first byte was served: a small object's,
    /// or with `--verify-first` any checked one's.
    checked: Option<Checked>,
    /// Where `--verify-first` keeps a content too large for memory until it is checked.
    verify_first: Option<PathBuf>,
}

/// Content read whole and checked.
#[derive(Debug)]
enum Checked {
    Memory(Bytes),
    /// An unlinked file under the cache directory.
    File(std::fs::File),
}

/// What a decode is of: an object version, and the size and SHA-256 it is checked
/// against (a metadata-only copy keeps S3's ETag but may change them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecodeId {
    object: ObjectId,
    expected: Expected,
}

/// The gzip decodes in progress, one per object version and expectation, shared by every
/// handle that reads it: four `grep`s of one compressed CSV decode it once, into one
/// decode file. A decode ends with its last handle; objects without an ETag (nothing to
/// tell versions apart by) are not shared.
#[derive(Debug)]
pub struct Decodes {
    dir: PathBuf,
    /// Where a decode's file becomes an entry, if the cache is on.
    cache: Option<Arc<ObjectCache>>,
    open: Mutex<HashMap<DecodeId, Weak<SharedGzip>>>,
}

impl Decodes {
    /// Decodes writing their files into `cache` when they may fill an entry, else under
    /// `dir`.
    pub fn new(dir: PathBuf, cache: Option<Arc<ObjectCache>>) -> Decodes {
        Decodes {
            dir,
            cache,
            open: Mutex::default(),
        }
    }

    /// The decode of `node`'s version checked against `expected`, started with `start`
    /// if none is running.
    fn get_or_start(
        &self,
        node: &Node,
        expected: Expected,
        start: impl FnOnce(&Decodes, Expected) -> Result<GzipReader, ViewError>,
    ) -> Result<Arc<SharedGzip>, ViewError> {
        let version = node.etag.is_some().then(|| DecodeId {
            object: node.object_id(),
            expected: expected.clone(),
        });
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = version.as_ref().and_then(|v| open.get(v)?.upgrade()) {
            // A decode that failed (a full decode disk, say) is not handed to new opens:
            // they start afresh, as each did before decodes were shared.
            if !shared.try_lock().is_ok_and(|decode| decode.has_failed()) {
                return Ok(shared);
            }
        }
        let shared = Arc::new(tokio::sync::Mutex::new(start(self, expected)?));
        if let Some(version) = version {
            open.retain(|_, decode| decode.strong_count() > 0);
            open.insert(version, Arc::downgrade(&shared));
        }
        Ok(shared)
    }
}

/// A reader of one object version as the file it shows.
#[derive(Debug)]
pub struct FileReader {
    key: String,
    inner: Inner,
    /// A verdict against the content is final for this handle.
    failed: Option<String>,
}

impl FileReader {
    /// A reader of `node` (with its headers); a gzip one joins the version's decode. A
    /// plain one feeds `fill` with what it reads.
    pub fn open(
        engine: &Arc<ReadEngine>,
        node: &Node,
        decodes: &Decodes,
        fill: Option<Fill>,
    ) -> Result<FileReader, ViewError> {
        let headers = node.headers.as_deref();
        let sha256 = headers.and_then(artifact::sha256).map(str::to_owned);
        let source = || engine.open(node.object_id(), node.stored_size);
        let compression = headers.map_or(Compression::None, artifact::compression);
        let inner = match compression {
            Compression::None => Inner::Plain(Plain {
                reader: source(),
                verifier: plain_hash(engine, node).map(|h| Verifier::new(h, node.stored_size)),
                fill,
                checked: None,
                verify_first: engine.config().verify_first.then(|| decodes.dir.clone()),
            }),
            Compression::Gzip => {
                let expected = Expected {
                    size: headers.and_then(artifact::original_size),
                    sha256,
                };
                Inner::Gzip(decodes.get_or_start(node, expected, |decodes, expected| {
                    let target = decodes
                        .cache
                        .as_ref()
                        .and_then(|cache| cache.decode_target(&node.object_id(), expected.size));
                    GzipReader::new(node.key.clone(), source(), &decodes.dir, expected, target)
                        .map(|reader| reader.checked_first(engine.config().verify_first))
                })?)
            }
        };
        Ok(FileReader {
            key: node.key.clone(),
            inner,
            failed: None,
        })
    }

    /// A reader of content not yet in the store, in the local file `spool`.
    pub fn spooled(key: &str, spool: &std::path::Path) -> std::io::Result<FileReader> {
        Ok(FileReader::local(key, std::fs::File::open(spool)?))
    }

    /// A reader of content in the local file `file` (a spool, or a cache entry).
    pub fn local(key: &str, file: std::fs::File) -> FileReader {
        FileReader {
            key: key.to_owned(),
            inner: Inner::Local(file),
            failed: None,
        }
    }

    /// Whether the kernel must pass every read through (no page cache, no clamping at
    /// st_size): for decoded content, whose size the kernel may not know exactly.
    pub fn direct_io(&self) -> bool {
        matches!(self.inner, Inner::Gzip(_))
    }

    /// Up to `len` bytes of the content at `offset`.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Chunk, ViewError> {
        if let Some(why) = &self.failed {
            return Err(ViewError::Mismatch {
                key: self.key.clone(),
                why: why.clone(),
            });
        }
        let result = match &mut self.inner {
            Inner::Plain(plain) => plain.read(offset, len).await,
            Inner::Gzip(reader) => reader
                .lock()
                .await
                .read(offset, len)
                .await
                .map(|(data, size)| Chunk { data, size }),
            Inner::Local(file) => read_local(file, offset, len).map_err(ViewError::Io),
        };
        result.map_err(|e| self.fail(e))
    }

    /// The handle is closed. A plain object of at most [`WHOLE_FETCH_MAX`] bytes that it
    /// read only in part (a random reader: a zip directory, a database page) is fetched
    /// whole in the background, one GET, to complete its cache entry.
    pub fn close(&mut self) {
        let Inner::Plain(Plain {
            reader,
            verifier,
            fill,
            ..
        }) = &mut self.inner
        else {
            return;
        };
        let (id, size) = reader.version();
        if size > WHOLE_FETCH_MAX || !fill.as_ref().is_some_and(Fill::is_running) {
            return;
        }
        let (Some(fill), Some(handle)) = (fill.take(), tokio::runtime::Handle::try_current().ok())
        else {
            return;
        };
        let hash = verifier.as_ref().map(|v| v.expected().clone());
        let job = fetch_whole(reader.engine().clone(), id.clone(), size, hash, fill);
        handle.spawn(job);
    }

    fn fail(&mut self, e: ViewError) -> ViewError {
        if let ViewError::Mismatch { why, .. } | ViewError::Corrupt { why, .. } = &e {
            tracing::warn!(key = %self.key, "{why}");
            self.failed = Some(why.clone());
        }
        e
    }
}

/// Plain objects this small that carry a SHA-256 are read whole and checked before
/// their first byte is served: a reader of a small file never sees a bad byte. Larger
/// ones are checked as they go, and the read that completes them fails on a mismatch,
/// unless `--verify-first` has them fetched whole into a local file first.
pub const CHECKED_FIRST_MAX: u64 = 256 << 10;

/// Bytes asked of the read engine at a time by a read of a whole object to check first.
const WHOLE_READ_CHUNK: u32 = 1 << 20;

impl Plain {
    /// A read of plain content: checked, and teed into the fill, which is sealed once
    /// the content is whole and checked (its SHA-256 matched, or, without one, every
    /// byte went by).
    async fn read(&mut self, offset: u64, len: u32) -> Result<Chunk, ViewError> {
        let (_, size) = self.reader.version();
        if self.checked.is_none() && self.verifier.is_some() {
            self.checked = self.check_first(size).await?;
        }
        match &self.checked {
            Some(Checked::Memory(whole)) => {
                let start = offset.min(size) as usize;
                let end = offset.saturating_add(u64::from(len)).min(size) as usize;
                return Ok(Chunk {
                    data: whole.slice(start..end),
                    size: None,
                });
            }
            Some(Checked::File(file)) => {
                let len = u64::from(len).min(size.saturating_sub(offset));
                return read_local(file, offset, len as u32).map_err(ViewError::Io);
            }
            None => {}
        }
        let data = self.reader.read(offset, len).await?;
        self.take(offset, &data).await?;
        Ok(Chunk { data, size: None })
    }

    /// The whole content, read and checked before its first byte is served: in memory
    /// for a small object, in a local file with `--verify-first`; `None` for one that
    /// streams.
    async fn check_first(&mut self, size: u64) -> Result<Option<Checked>, ViewError> {
        if size <= CHECKED_FIRST_MAX {
            let mut whole = bytes::BytesMut::with_capacity(size as usize);
            let keep = |_, data: &Bytes| {
                whole.extend_from_slice(data);
                Ok(())
            };
            self.read_checked(size, keep).await?;
            return Ok(Some(Checked::Memory(whole.freeze())));
        }
        let Some(dir) = &self.verify_first else {
            return Ok(None);
        };
        let file = gzip::decode_file(dir).map_err(ViewError::Io)?;
        let keep = |offset, data: &Bytes| file.write_all_at(data, offset);
        self.read_checked(size, keep).await?;
        Ok(Some(Checked::File(file)))
    }

    /// Reads the whole `size` bytes in order, each chunk handed to `keep` and checked;
    /// a mismatch, or content that ends short or was not judged, fails before any byte
    /// is served. A failed attempt leaves nothing behind: the next one reads and hashes
    /// every byte again, with no fill (its bytes would come from two fetches).
    async fn read_checked(
        &mut self,
        size: u64,
        mut keep: impl FnMut(u64, &Bytes) -> std::io::Result<()>,
    ) -> Result<(), ViewError> {
        let result = self.read_checked_once(size, &mut keep).await;
        if result.is_err() {
            self.fill = None;
            let expected = self.verifier.as_ref().map(|v| v.expected().clone());
            self.verifier = expected.map(|hash| Verifier::new(hash, size));
        }
        result
    }

    async fn read_checked_once(
        &mut self,
        size: u64,
        keep: &mut impl FnMut(u64, &Bytes) -> std::io::Result<()>,
    ) -> Result<(), ViewError> {
        let (mut offset, mut verdict) = (0, None);
        while offset < size {
            let want = u32::try_from(size - offset)
                .map_or(WHOLE_READ_CHUNK, |left| left.min(WHOLE_READ_CHUNK));
            let data = self.reader.read(offset, want).await?;
            if data.is_empty() {
                break;
            }
            keep(offset, &data).map_err(ViewError::Io)?;
            verdict = self.take(offset, &data).await?;
            offset += data.len() as u64;
        }
        // An empty object gives the verifier no byte to judge: it is served as it is.
        if size > 0 && verdict != Some(Verdict::Matches) {
            return Err(ViewError::Corrupt {
                key: self.reader.key().to_owned(),
                why: format!("not verified whole: {offset} of {size} bytes read"),
            });
        }
        Ok(())
    }

    /// Checks and tees `data`, read at `offset`: the verdict so far, if checked.
    async fn take(&mut self, offset: u64, data: &Bytes) -> Result<Option<Verdict>, ViewError> {
        let verdict = self.verifier.as_mut().map(|v| v.feed(offset, data));
        if let Some(Verdict::Mismatch { expected, actual }) = verdict {
            self.fill = None;
            return Err(ViewError::Mismatch {
                key: self.reader.key().to_owned(),
                why: format!(
                    "{} {actual}, the object says {}",
                    expected.name(),
                    expected.hex()
                ),
            });
        }
        if let Some(fill) = &mut self.fill {
            fill.feed(offset, data).await;
            match verdict {
                Some(Verdict::Matches) => fill.seal(),
                None if fill.is_whole() => fill.seal(),
                _ => {}
            }
        }
        Ok(verdict)
    }
}

/// What the plain content of `node` must hash to, if anything.
fn plain_hash(engine: &ReadEngine, node: &Node) -> Option<ContentHash> {
    let etag_md5 = engine.config().etag_md5;
    ContentHash::of(node.headers.as_deref()?, node.etag.as_deref(), etag_md5)
}

/// Plain objects this small that a handle left part read are fetched whole at its close.
pub const WHOLE_FETCH_MAX: u64 = 8 << 20;

/// Fetches version `id` (`size` bytes, hashing to `hash` if known) in one GET and
/// completes `fill` with it; nothing is kept if the bytes are not the object's.
async fn fetch_whole(
    engine: Arc<ReadEngine>,
    id: ObjectId,
    size: u64,
    hash: Option<ContentHash>,
    mut fill: Fill,
) {
    let data = match engine.read_small(&id, 0..size).await {
        Ok(data) => Bytes::from(data),
        Err(e) => return tracing::debug!(key = %id.key, "no whole fetch for the cache: {e}"),
    };
    let checked = data.len() as u64 == size && hash.is_none_or(|hash| hash.matches(&data));
    if !checked {
        return tracing::warn!(key = %id.key, "not cached: the object's bytes are not what its metadata says");
    }
    fill.feed(0, &data).await;
    fill.seal();
}

/// Up to `len` bytes of a local file at `offset`.
fn read_local(file: &std::fs::File, offset: u64, len: u32) -> std::io::Result<Chunk> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(Chunk {
        data: Bytes::from(buf),
        size: None,
    })
}

use artifact::hex;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::artifact::{sha256_hex, KeptAttrs};
    use crate::namespace::{InodeKind, InodeNo};
    use crate::object::{MemoryClient, ObjectHeaders};
    use crate::readahead::ReadConfig;

    /// `--verify-first`, a body that breaks mid-fetch: the read fails, and the next read
    /// fetches and checks the whole object again, then serves it.
    #[test]
    fn a_verify_first_fetch_that_broke_is_done_again_whole() {
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let client = MemoryClient::new();
        let mut headers = ObjectHeaders::default();
        (headers.user_metadata).insert("rgrid-sha256".into(), sha256_hex(&data));
        let etag = client.insert("k", data.clone(), headers.clone());
        client.break_next_bodies(1);
        let config = ReadConfig {
            verify_first: true,
            attempts: 1,
            ..ReadConfig::default()
        };
        let engine = ReadEngine::new(Arc::new(client), config);
        let node = Node {
            ino: InodeNo(2),
            kind: InodeKind::File,
            key: "k".into(),
            size: data.len() as u64,
            stored_size: data.len() as u64,
            mtime: SystemTime::UNIX_EPOCH,
            etag: Some(etag),
            read_only: false,
            unlinked: false,
            headers: Some(Arc::new(headers)),
            kept: KeptAttrs::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let decodes = Decodes::new(dir.path().to_owned(), None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut reader = FileReader::open(&engine, &node, &decodes, None).unwrap();
        let first = runtime.block_on(reader.read(0, 4096));
        assert!(
            first.is_err_and(|e| !e.is_bad_content()),
            "the broken fetch"
        );
        let chunk = runtime.block_on(reader.read(0, 4096)).unwrap();
        assert_eq!(chunk.data[..], data[..4096]);
        let tail = runtime.block_on(reader.read((3 << 20) - 10, 4096)).unwrap();
        assert_eq!(tail.data[..], data[data.len() - 10..]);
    }
}
