//! Reference-model property test of [`RgridFs`](super::RgridFs), as mountpoint-s3's
//! reftests: random sequences of creates, opens, writes, reads, truncates, flushes,
//! fsyncs, closes, renames, unlinks, chmod, touch, mkdir, rmdir, listings and stats, made
//! on the filesystem directly (no FUSE) over the in-memory client, mixed with changes
//! another client makes in the bucket. Every answer is checked against a small model, and
//! after every step the bucket must hold exactly what the model says.
//!
//! The model is close-to-open consistency in the default mode (close waits for the
//! upload), with a metadata TTL of 0 so that the store's changes show at once: a close
//! uploads what its handle wrote (two writers of one file: the last close wins); a reader
//! reads the version the store had at its open; a writer opened without O_TRUNC starts
//! from it; a rename moves the bytes, an unlink removes the key, and lookups, mkdir and
//! rmdir answer with a local filesystem's errno; fsync uploads as a close does; chmod and
//! touch never change a file's bytes (a stored file gets a new version of the same bytes,
//! one being written takes them up with its next upload, changed or not). Once the last
//! writer of a file has closed, what the mount shows of it is the store's again. A close
//! by a child process, of a descriptor it inherited, uploads nothing while the opener has
//! not closed its own; after that it uploads as any close. A name that is a file and a
//! directory (a key `d1` beside keys under `d1/`) is the directory, unless the file is
//! being written here; one kind is never made over the other (the kernel's lookup finds
//! it: EEXIST, EISDIR, ENOTDIR).
//!
//! Where the code documents a looser answer, the model allows that and nothing else. A
//! handle pinned to a version the store no longer has (replaced, deleted, renamed away)
//! may still read that version (from a cache) or fail with EIO, never read
//! another. A writer with nothing changed, a mode or mtime set while it is open and its
//! version gone, fails its flush the same way: it has no bytes to upload. A reader opened
//! while a writer of the same file is open reads what the namespace shows of it, the
//! version at the writer's open at the writer's size, so it may read any bytes the key
//! ever held at that offset, or fail. After a flush, the namespace shows the store's facts
//! of a file even while writers still have it open, so stat may show the store's size or
//! one of theirs, and a chmod may rewrite the stored object or wait for the writers.

mod harness;
mod regressions;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::select;

use super::FileHandle;
use crate::artifact::sha256_hex;
use crate::namespace::InodeNo;
use harness::Harness;

/// Few directories and names, so that operations collide often; a file `d1` in the root
/// and directory `d1` are one name.
const DIRS: [&str; 3] = ["", "d1", "d2"];
const NAMES: [&str; 4] = ["a", "b", "c", "d1"];

/// The pid of init: a process other than the opener, whatever runs the test.
const OTHER_PROCESS: u32 = 1;

type Checked = Result<(), TestCaseError>;

/// A version of a key: what a handle's reads or lazy fill are pinned to.
type Pin = (String, u64);

#[derive(Clone, Copy, PartialEq, Eq)]
struct FilePath {
    dir: &'static str,
    name: &'static str,
}

impl FilePath {
    fn key(self) -> String {
        match self.dir {
            "" => self.name.to_owned(),
            dir => format!("{dir}/{}", self.name),
        }
    }
}

impl std::fmt::Debug for FilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.key())
    }
}

/// How open(2) is called: O_RDONLY, O_RDWR, or O_RDWR | O_TRUNC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write,
    Truncate,
}

/// One step. Handles are named by their index among the open ones (modulo their count),
/// so that a shrunk sequence still names one.
#[derive(Debug, Clone)]
enum Op {
    /// creat(2) as the kernel does it: a lookup, then create, or open with O_TRUNC.
    Create(FilePath),
    /// open(2) of an existing file.
    Open(FilePath, Mode),
    /// pwrite(2) through an open writer: handle, offset (`None`: append), length, seed.
    Write(usize, Option<u64>, usize, u8),
    /// pread(2) through any open handle: handle, offset, length.
    Read(usize, u64, u32),
    /// ftruncate(2) through an open writer (setattr with its handle): handle, length.
    Ftruncate(usize, u64),
    /// truncate(2) of a path (setattr without a handle).
    Truncate(FilePath, u64),
    /// FLUSH alone: the close of a duplicated descriptor.
    Flush(usize),
    /// FLUSH from another process: a child closing the descriptor it inherited.
    FlushByChild(usize),
    /// fsync(2) of a handle.
    Fsync(usize),
    /// RELEASE alone: the last close of a file written through mmap.
    Release(usize),
    /// close(2) of the last descriptor: FLUSH, then RELEASE.
    Close(usize),
    Rename(FilePath, FilePath),
    /// rename(2) of a directory of the root onto another (absent, or empty: replaced).
    RenameDir(&'static str, &'static str),
    Unlink(FilePath),
    /// chmod(2) of a path: the mode's permission bits.
    Chmod(FilePath, u32),
    /// `touch -d` of a path: seconds since the epoch.
    Touch(FilePath, u32),
    Mkdir(&'static str),
    Rmdir(&'static str),
    Readdir(&'static str),
    /// stat(2): a lookup, and the size it shows.
    Stat(FilePath),
    /// Another client puts bytes at the key: path, length, seed.
    Put(FilePath, usize, u8),
    /// Another client deletes the key.
    Delete(FilePath),
    /// `rgrid-mount sync`: every close so far is in the store.
    Sync,
}

/// One test case: the bucket before the mount, whether the object cache is on, whether
/// closes write back (`--write-back`), the steps.
#[derive(Debug, Clone)]
struct Case {
    objects: Vec<(FilePath, usize, u8)>,
    cached: bool,
    write_back: bool,
    ops: Vec<Op>,
}

fn path() -> impl Strategy<Value = FilePath> {
    let names = (select(DIRS.to_vec()), select(NAMES.to_vec()));
    names.prop_map(|(dir, name)| FilePath { dir, name })
}

/// A directory other than the root.
fn dir() -> impl Strategy<Value = &'static str> {
    select(DIRS[1..].to_vec())
}

fn handle() -> impl Strategy<Value = usize> {
    0usize..4
}

fn op() -> impl Strategy<Value = Op> {
    let mode = select(vec![Mode::Read, Mode::Write, Mode::Truncate]);
    let at = prop::option::weighted(0.6, 0u64..6000);
    let write = (handle(), at, 1usize..3000, any::<u8>());
    let put = (path(), 0usize..6000, any::<u8>());
    prop_oneof![
        3 => path().prop_map(Op::Create),
        3 => (path(), mode).prop_map(|(path, mode)| Op::Open(path, mode)),
        6 => write.prop_map(|(handle, at, len, seed)| Op::Write(handle, at, len, seed)),
        4 => (handle(), 0u64..10_000, 1u32..4096).prop_map(|(h, at, len)| Op::Read(h, at, len)),
        1 => (handle(), 0u64..9000).prop_map(|(handle, len)| Op::Ftruncate(handle, len)),
        1 => (path(), 0u64..9000).prop_map(|(path, len)| Op::Truncate(path, len)),
        1 => handle().prop_map(Op::Flush),
        1 => handle().prop_map(Op::FlushByChild),
        1 => handle().prop_map(Op::Fsync),
        1 => handle().prop_map(Op::Release),
        3 => handle().prop_map(Op::Close),
        2 => (path(), path()).prop_map(|(from, to)| Op::Rename(from, to)),
        1 => (dir(), dir()).prop_map(|(from, to)| Op::RenameDir(from, to)),
        2 => path().prop_map(Op::Unlink),
        1 => (path(), select(vec![0o600u32, 0o644, 0o755])).prop_map(|(p, m)| Op::Chmod(p, m)),
        1 => (path(), 0u32..2_000_000_000).prop_map(|(p, t)| Op::Touch(p, t)),
        1 => dir().prop_map(Op::Mkdir),
        1 => dir().prop_map(Op::Rmdir),
        1 => select(DIRS.to_vec()).prop_map(Op::Readdir),
        2 => path().prop_map(Op::Stat),
        2 => put.prop_map(|(path, len, seed)| Op::Put(path, len, seed)),
        1 => path().prop_map(Op::Delete),
        1 => Just(Op::Sync),
    ]
}

/// Write-back cases have no other client: an upload still queued lands after another
/// client's change or before it, as the queue goes, which is the last writer winning in
/// either order and no single answer a model could give. Half the cases write back.
fn any_case() -> impl Strategy<Value = Case> {
    let objects = prop::collection::vec((path(), 0usize..6000, any::<u8>()), 0..4);
    let ops = prop::collection::vec(op(), 1..50);
    let write_back = prop::bool::weighted(0.5);
    let case = (objects, any::<bool>(), write_back, ops);
    case.prop_map(|(objects, cached, write_back, mut ops)| {
        if write_back {
            ops.retain(|op| !matches!(op, Op::Put(..) | Op::Delete(..)));
        }
        Case {
            objects,
            cached,
            write_back,
            ops,
        }
    })
}

/// `len` bytes that differ with `seed` and with position, so that a byte from another
/// offset or another version shows.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let byte = |i: usize| (i * 7 + usize::from(seed) * 131 + (i >> 8)) as u8;
    (0..len).map(byte).collect()
}

/// The thread that makes every request: the opener, whose closes upload.
fn caller() -> u32 {
    std::process::id()
}

/// Up to `len` bytes of `content` at `offset`, as a read returns them.
fn slice(content: &[u8], offset: u64, len: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(content.len());
    let end = start.saturating_add(len as usize).min(content.len());
    &content[start..end]
}

fn write_at(content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(data);
}

fn same_bytes(got: &[u8], want: &[u8], what: &str) -> Checked {
    if got == want {
        return Ok(());
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    let at = at.unwrap_or(got.len().min(want.len()));
    let (got, want) = (got.len(), want.len());
    let why = format!("{what}: {got} bytes where the model has {want}, first difference at {at}");
    Err(TestCaseError::fail(why))
}

/// Keys with their sizes and a hash prefix: enough to tell two buckets apart.
fn summary(objects: &BTreeMap<String, Vec<u8>>) -> String {
    let line = |(key, data): (&String, &Vec<u8>)| {
        format!("{key}: {} bytes {}", data.len(), &sha256_hex(data)[..8])
    };
    objects.iter().map(line).collect::<Vec<_>>().join(", ")
}

/// What a lookup of a name finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// One version of an object in the model bucket: its bytes and a number no other write
/// has.
#[derive(Debug)]
struct Object {
    data: Vec<u8>,
    version: u64,
}

/// What the mount knows of the inode at a path beyond what the store says; kept from
/// its first open for as long as the namespace keeps the name on that inode.
#[derive(Debug)]
struct FileState {
    /// The model's number for the inode.
    inode: u64,
    /// A writer made its facts (size, version) the mount's, not the store's.
    local: bool,
    /// Created here and not uploaded yet: no object in the store is its content.
    unstored: bool,
    /// While local: the version the namespace shows, which a rename copies (If-Match).
    since: Option<u64>,
    /// While local: the size stat shows, its writers' latest.
    size: u64,
    /// A mode or mtime set while local, which the next flush of a writer takes up with
    /// its content, changed or not.
    attrs_pending: bool,
}

#[derive(Debug, Default)]
struct Model {
    bucket: BTreeMap<String, Object>,
    /// Every content each key has held, for the reads the code leaves loose.
    history: BTreeMap<String, Vec<Vec<u8>>>,
    /// Directories made with mkdir and not removed.
    dirs: BTreeSet<String>,
    /// The inode at each path the mount opened, by name as the namespace keeps it.
    files: BTreeMap<String, FileState>,
    /// The last version or inode number handed out.
    counter: u64,
}

impl Model {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn put(&mut self, key: &str, data: Vec<u8>) {
        let version = self.next();
        let history = self.history.entry(key.to_owned()).or_default();
        history.push(data.clone());
        self.bucket.insert(key.to_owned(), Object { data, version });
    }

    /// Whether the store still has version `version` of `key`.
    fn holds(&self, (key, version): &Pin) -> bool {
        self.bucket.get(key).is_some_and(|o| o.version == *version)
    }

    /// Whether some content `key` ever held has `data` at `offset`: for no data, ends
    /// at or before `offset`.
    fn held(&self, key: &str, offset: u64, data: &[u8]) -> bool {
        let start = offset as usize;
        let at = |c: &Vec<u8>| match data.is_empty() {
            true => c.len() <= start,
            false => c.get(start..start + data.len()) == Some(data),
        };
        self.history.get(key).is_some_and(|all| all.iter().any(at))
    }

    /// A directory exists if made here, if keys lie under it, or while a file being
    /// written here is in it (an implicit one goes with its last key otherwise).
    fn dir_visible(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        let implicit = self.bucket.keys().any(|k| k.starts_with(&prefix));
        let writing = self
            .files
            .iter()
            .any(|(k, f)| f.local && k.starts_with(&prefix));
        dir.is_empty() || self.dirs.contains(dir) || implicit || writing
    }

    fn local(&self, key: &str) -> Option<&FileState> {
        self.files.get(key).filter(|f| f.local)
    }

    /// What `key` is: a file being written here, else a directory, else a stored file
    /// (a directory shadows the key of its name).
    fn kind(&self, key: &str) -> Option<Kind> {
        if key.is_empty() {
            return Some(Kind::Dir);
        }
        if self.local(key).is_some() {
            return Some(Kind::File);
        }
        if self.dir_visible(key) {
            return Some(Kind::Dir);
        }
        self.bucket.contains_key(key).then_some(Kind::File)
    }

    /// What a lookup of `path` finds, its directory being one.
    fn kind_at(&self, path: FilePath) -> Option<Kind> {
        match self.kind(path.dir) {
            Some(Kind::Dir) => self.kind(&path.key()),
            _ => None,
        }
    }

    /// The inode at `key`, numbered at its first open.
    fn state(&mut self, key: &str) -> &mut FileState {
        let fresh = self.counter + 1;
        let state = self.files.entry(key.to_owned()).or_insert(FileState {
            inode: fresh,
            local: false,
            unstored: false,
            since: None,
            size: 0,
            attrs_pending: false,
        });
        if state.inode == fresh {
            self.counter = fresh;
        }
        state
    }

    /// What stat shows as the size of a visible file.
    fn size(&self, key: &str) -> u64 {
        match self.local(key) {
            Some(state) => state.size,
            None => self.bucket.get(key).map_or(0, |o| o.data.len() as u64),
        }
    }

    /// What a writer opened without O_TRUNC starts from (the store's current version,
    /// nothing for a file created here), and the version it copies lazily; `None`: the
    /// store has no version (ENOENT).
    fn stored_base(&self, key: &str) -> Option<(Vec<u8>, Option<Pin>)> {
        if self.files.get(key).is_some_and(|f| f.unstored) {
            return Some((Vec::new(), None));
        }
        let object = self.bucket.get(key)?;
        let pin = (!object.data.is_empty()).then(|| (key.to_owned(), object.version));
        Some((object.data.clone(), pin))
    }

    /// `inode`'s content went up as `key`: the namespace shows the store's facts again.
    fn stored(&mut self, key: &str, inode: u64, content: Vec<u8>) {
        self.put(key, content);
        if let Some(state) = self.files.get_mut(key).filter(|s| s.inode == inode) {
            (state.local, state.unstored, state.since) = (false, false, None);
            state.attrs_pending = false;
        }
    }

    /// The names in `dir`: its keys, its files being written, and (the root) its
    /// directories.
    fn listing(&self, dir: &str) -> BTreeSet<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let child = |key: &String| key.strip_prefix(&prefix).map(str::to_owned);
        let mut names: BTreeSet<String> = self
            .bucket
            .keys()
            .filter_map(child)
            .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
            .collect();
        let writing = self.files.iter().filter(|(_, f)| f.local);
        let writing = writing
            .filter_map(|(key, _)| child(key))
            .map(|rest| rest.split('/').next().unwrap_or_default().to_owned());
        names.extend(writing);
        if dir.is_empty() {
            names.extend(self.dirs.iter().cloned());
        }
        names
    }

    /// `dir` was made or removed: the inodes below the old one are no name's any more
    /// (the namespace keeps names per directory inode).
    fn forget_below(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        self.files.retain(|key, _| !key.starts_with(&prefix));
    }
}

/// An open handle: the filesystem's, and what the model expects of it.
#[derive(Debug)]
struct Handle {
    fh: FileHandle,
    ino: InodeNo,
    /// The model's inode.
    inode: u64,
    /// Its inode's key now (it follows renames): where a writer's close uploads.
    key: String,
    /// Its file was unlinked, or replaced by a rename: a close uploads nothing.
    unlinked: bool,
    /// The opener flushed it: from then on a child's close uploads as its own does.
    opener_closed: bool,
    view: View,
}

#[derive(Debug)]
enum View {
    /// A reader of version `pin`, whose content is `data`.
    Reader { pin: Pin, data: Vec<u8> },
    /// A reader opened beside an open writer of `key` (see the module doc), and what
    /// the writers of `key` held at its open.
    Loose { key: String, seen: Vec<Vec<u8>> },
    /// A writer: its content, whether its close uploads, and the version its content is
    /// copied from until its first change (lazily: nothing is fetched up front).
    Writer {
        content: Vec<u8>,
        dirty: bool,
        pin: Option<Pin>,
    },
}

impl View {
    fn writer(content: Vec<u8>, dirty: bool, pin: Option<Pin>) -> View {
        View::Writer {
            content,
            dirty,
            pin,
        }
    }

    fn is_writer(&self) -> bool {
        matches!(self, View::Writer { .. })
    }
}

async fn run(case: Case) -> Checked {
    let mut harness = Harness::new(&case);
    for (step, op) in case.ops.iter().enumerate() {
        let checked = match harness.apply(op).await {
            Ok(()) if case.write_back && !matches!(op, Op::Sync) => {
                harness.check_bucket_lags().await
            }
            Ok(()) => harness.check_bucket().await,
            failed => failed,
        };
        if let Err(e) = checked {
            let bucket = harness.bucket_summary().await;
            return Err(TestCaseError::fail(format!(
                "step {step}, {op:?}: {e}; bucket {{{bucket}}}"
            )));
        }
    }
    let finished = harness.finish().await;
    finished.map_err(|e| TestCaseError::fail(format!("closing what was left open: {e}")))
}

// 256 cases of up to 50 steps, each on its own runtime and bucket: about two seconds in a
// debug build (PROPTEST_CASES=3000 for a longer hunt). Failures shrink, and their seeds go
// to proptest-regressions/fs/model.txt; the ones found so far are named cases below.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of operations gives the model's answers and leaves the model's bucket.
    #[test]
    fn operations_match_the_reference_model(case in any_case()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(run(case))?;
    }
}
