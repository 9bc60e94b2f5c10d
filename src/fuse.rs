//! `FuseAdapter`: the thin wrapper that binds [`RgridFs`] to fuser. Each callback opens
//! a span, runs the fuser-free operation (on the tokio runtime when it may reach the
//! store), and turns the result into a reply or an errno. No filesystem logic lives here;
//! `fuse/session.rs` mounts and serves the session.

mod backing;
mod session;

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use tokio::runtime::Handle;
use tracing::{debug, warn, Instrument};

use crate::fs::{
    Attr, Caller, FileHandle, FsError, OpenMode, RgridFs, SetAttr, SetTime, Severity, XattrValue,
};
use crate::metrics;
use crate::namespace::{InodeKind, InodeNo};
use backing::Backings;
pub use session::{serve, SessionConfig};

/// Asynchronous requests (read-ahead) the kernel may keep in flight.
const MAX_BACKGROUND: u16 = 64;

/// The fuser binding of one mount.
#[derive(Debug)]
pub struct FuseAdapter {
    fs: Arc<RgridFs>,
    runtime: Handle,
    ttl: Duration,
    /// The largest read or write one request carries.
    request_size: u32,
    backings: Backings,
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: InodeKind) -> FileType {
    match kind {
        InodeKind::File => FileType::RegularFile,
        InodeKind::Directory => FileType::Directory,
        InodeKind::Symlink => FileType::Symlink,
    }
}

fn ino(i: INodeNo) -> InodeNo {
    InodeNo(i.0)
}

fn handle(fh: fuser::FileHandle) -> FileHandle {
    FileHandle(fh.0)
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
        TimeOrNow::Now => SetTime::Now,
    }
}

/// One FUSE request: the name of its operation, for its latency metric, and its span
/// (request id and arguments).
struct Op {
    name: &'static str,
    span: tracing::Span,
}

/// A synchronous request in progress: in its span, timed until dropped.
struct OpGuard {
    name: &'static str,
    start: Instant,
    _entered: tracing::span::EnteredSpan,
}

impl Op {
    fn enter(self) -> OpGuard {
        OpGuard {
            name: self.name,
            start: Instant::now(),
            _entered: self.span.entered(),
        }
    }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        metrics::fuse_operation(self.name, self.start.elapsed());
    }
}

/// The [`Op`] of a FUSE request: its name, request id and arguments.
macro_rules! op {
    ($op:literal, $req:ident $(, $($field:tt)*)?) => {
        Op {
            name: $op,
            span: tracing::debug_span!($op, req = $req.unique().0 $(, $($field)*)?),
        }
    };
}

/// Logs a failure once, at the level the error carries, has `fs` count it, and gives
/// its errno.
fn errno(fs: &RgridFs, op: &str, err: &FsError) -> Errno {
    fs.failed(err);
    match err.severity() {
        Severity::Debug => debug!(op, "{err}"),
        Severity::Warn => warn!(op, "{err}"),
    }
    Errno::from_i32(err.errno())
}

/// An xattr reply: the size alone, or the value.
fn reply_xattr(fs: &RgridFs, op: &str, result: Result<XattrValue, FsError>, reply: ReplyXattr) {
    match result {
        Ok(XattrValue::Size(len)) => reply.size(len),
        Ok(XattrValue::Data(value)) => reply.data(&value),
        Err(e) => reply.error(errno(fs, op, &e)),
    }
}

impl FuseAdapter {
    /// Binds `fs`, running its operations on `runtime`.
    pub fn new(fs: Arc<RgridFs>, runtime: Handle, session: &SessionConfig) -> Self {
        FuseAdapter {
            fs,
            runtime,
            ttl: session.attr_ttl,
            request_size: session.request_size,
            backings: Backings::default(),
        }
    }

    /// Runs one operation on the runtime, inside its request span, timed.
    fn run<F: Future>(&self, op: Op, fut: F) -> F::Output {
        let start = Instant::now();
        let out = self.runtime.block_on(fut.instrument(op.span));
        metrics::fuse_operation(op.name, start.elapsed());
        out
    }

    /// Runs `op`, which replies itself, here if it can finish at once (data already
    /// fetched: no thread hop), else as a task: an operation waiting on the store (a
    /// stalled body waits up to the stall timeout) then holds no FUSE thread, which stay
    /// free for lookups, and its GET runs on the runtime's threads beside its connection.
    fn run_or_spawn<F>(&self, op: Op, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let _runtime = self.runtime.enter();
        let (name, start) = (op.name, Instant::now());
        let timed = async move {
            fut.await;
            metrics::fuse_operation(name, start.elapsed());
        };
        let mut op = Box::pin(timed.instrument(op.span));
        // A future polled once and moved is polled again with the task's waker, which
        // replaces the no-op one it registered here.
        if futures::FutureExt::now_or_never(&mut op).is_none() {
            self.runtime.spawn(op);
        }
    }

    /// Replies to an operation that makes or finds an entry.
    fn entry(&self, op: &str, result: Result<Attr, FsError>, reply: ReplyEntry) {
        match result {
            Ok(attr) => reply.entry(&self.ttl, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&self.fs, op, &e)),
        }
    }

    /// Replies to an operation that answers with attributes.
    fn attr(&self, op: &str, result: Result<Attr, FsError>, reply: ReplyAttr) {
        match result {
            Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
            Err(e) => reply.error(errno(&self.fs, op, &e)),
        }
    }
}

/// Replies to an operation that answers with nothing but success.
fn empty(fs: &RgridFs, op: &str, result: Result<(), FsError>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(fs, op, &e)),
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Requests of up to `request_size` (max_pages is negotiated from max_write and
        // max_readahead; the kernel caps it at max_pages_limit), and many read-ahead
        // requests in flight: the read engine serves them concurrently.
        if let Err(max) = config.set_max_readahead(self.request_size) {
            let _ = config.set_max_readahead(max);
        }
        if let Err(max) = config.set_max_write(self.request_size) {
            let _ = config.set_max_write(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        // readdirplus hands attributes over with the entries: `ls -l` of N files then
        // costs no lookup round trip per file.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        // O_TRUNC arrives with the open instead of as a separate truncate beforehand.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Setuid and setgid bits are cleared here on write (the kernel flags the writes
        // that must), so it need not ask for security.capability before every write: a
        // round trip per write saved (tar -x of 1,000 files sent 2,950 of them).
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // Files opened with direct I/O (gzip views, --direct-io) can still be mapped
        // shared (numpy.memmap, Python's mmap): the kernel serves the map from the page
        // cache instead of refusing it with ENODEV.
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_err()
        {
            warn!("kernel older than 6.6: files read with direct I/O (gzip views, --direct-io) cannot be mapped shared (ENODEV)");
        }
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        // Cached files are served by the kernel from their cache entry (6.9 or later).
        let passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        if !passthrough && self.fs.passthrough_unavailable() {
            warn!("kernel without FUSE passthrough (6.9 or later): cached files are read through the daemon");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let op = op!("lookup", req, parent = parent.0, ?name);
        let result = self.run(op, self.fs.lookup(ino(parent), name));
        self.entry("lookup", result, reply);
    }

    fn forget(&self, req: &Request, i: INodeNo, nlookup: u64) {
        let _span = op!("forget", req, ino = i.0, nlookup).enter();
        self.fs.forget(ino(i), nlookup);
    }

    fn getattr(&self, req: &Request, i: INodeNo, _fh: Option<fuser::FileHandle>, reply: ReplyAttr) {
        let result = self.run(op!("getattr", req, ino = i.0), self.fs.getattr(ino(i)));
        self.attr("getattr", result, reply);
    }

    fn open(&self, req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode {
            write: flags.acc_mode() != OpenAccMode::O_RDONLY,
            truncate: flags.0 & libc::O_TRUNC != 0,
            caller: req.pid(),
        };
        match self.run(op!("open", req, ino = i.0), self.fs.open(ino(i), mode)) {
            Ok(opened) => {
                let mut flags = FopenFlags::empty();
                flags.set(FopenFlags::FOPEN_KEEP_CACHE, opened.keep_cache);
                flags.set(FopenFlags::FOPEN_DIRECT_IO, opened.direct_io);
                let Some(file) = &opened.backing else {
                    return reply.opened(fuser::FileHandle(opened.fh.0), flags);
                };
                if let Err((reply, e)) = self.backings.reply(reply, i.0, opened.fh.0, file) {
                    if self.fs.passthrough_refused(opened.fh) {
                        warn!("FUSE passthrough refused ({e}): cached files are read through the daemon");
                    }
                    reply.opened(fuser::FileHandle(opened.fh.0), flags);
                }
            }
            Err(e) => reply.error(errno(&self.fs, "open", &e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let read = async move {
            match fs.read(handle(fh), offset, size).await {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => reply.error(errno(&fs, "read", &e)),
            }
        };
        self.run_or_spawn(op!("read", req, fh = fh.0, offset, size), read);
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.backings.release(fh.0);
        self.run(op!("release", req, fh = fh.0), self.fs.release(handle(fh)));
        reply.ok();
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let closer = Some(req.pid());
        let op = op!("flush", req, fh = fh.0);
        empty(
            &self.fs,
            "flush",
            self.run(op, self.fs.flush(handle(fh), closer)),
            reply,
        );
    }

    fn opendir(&self, req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.run(op!("opendir", req, ino = i.0), self.fs.opendir(ino(i))) {
            Ok(fh) => reply.opened(fuser::FileHandle(fh.0), FopenFlags::empty()),
            Err(e) => reply.error(errno(&self.fs, "opendir", &e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _span = op!("readdir", req, fh = fh.0, offset).enter();
        let result = self.fs.readdir(handle(fh), offset, false, |line| {
            let (ino, kind) = (INodeNo(line.attr.ino.0), file_type(line.attr.kind));
            !reply.add(ino, line.next_offset, kind, line.name)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&self.fs, "readdir", &e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _span = op!("readdirplus", req, fh = fh.0, offset).enter();
        let result = self.fs.readdir(handle(fh), offset, true, |line| {
            let attr = file_attr(&line.attr);
            !reply.add(
                attr.ino,
                line.next_offset,
                line.name,
                &self.ttl,
                &attr,
                Generation(0),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&self.fs, "readdirplus", &e)),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _span = op!("releasedir", req, fh = fh.0).enter();
        self.fs.releasedir(handle(fh));
        reply.ok();
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let op = op!("getxattr", req, ino = i.0, ?name);
        let caller = Caller {
            pid: req.pid(),
            uid: req.uid(),
        };
        let (fs, name) = (self.fs.clone(), name.to_owned());
        // As a task: the control channel's sync waits for uploads, holding no FUSE thread.
        self.run_or_spawn(op, async move {
            let result = fs.getxattr(ino(i), &name, size, caller).await;
            reply_xattr(&fs, "getxattr", result, reply);
        });
    }

    fn listxattr(&self, req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        let op = op!("listxattr", req, ino = i.0);
        let result = self.run(op, self.fs.listxattr(ino(i), size));
        reply_xattr(&self.fs, "listxattr", result, reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let op = op!("setxattr", req, ino = i.0, ?name);
        let result = self.run(op, self.fs.setxattr(ino(i), name, value));
        empty(&self.fs, "setxattr", result, reply);
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = op!("removexattr", req, ino = i.0, ?name);
        let result = self.run(op, self.fs.removexattr(ino(i), name));
        empty(&self.fs, "removexattr", result, reply);
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _span = op!("statfs", req).enter();
        let s = self.fs.statfs();
        let (blocks, files) = (s.blocks, s.files);
        reply.statfs(
            blocks,
            blocks,
            blocks,
            files,
            files,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<fuser::FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let op = op!("setattr", req, ino = i.0, ?size, ?mode, ?mtime);
        let set = SetAttr {
            mode,
            size,
            mtime: mtime.map(set_time),
        };
        let result = self.run(op, self.fs.setattr(ino(i), fh.map(handle), set));
        self.attr("setattr", result, reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let op = op!("mknod", req, parent = parent.0, ?name);
        let result = self.run(op, self.fs.mknod(ino(parent), name));
        self.entry("mknod", result, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let op = op!("mkdir", req, parent = parent.0, ?name);
        let result = self.run(op, self.fs.mkdir(ino(parent), name));
        self.entry("mkdir", result, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = op!("unlink", req, parent = parent.0, ?name);
        empty(
            &self.fs,
            "unlink",
            self.run(op, self.fs.unlink(ino(parent), name)),
            reply,
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = op!("rmdir", req, parent = parent.0, ?name);
        empty(
            &self.fs,
            "rmdir",
            self.run(op, self.fs.rmdir(ino(parent), name)),
            reply,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let op = op!("symlink", req, parent = parent.0, ?name, ?target);
        let result = self.run(op, self.fs.symlink(ino(parent), name, target.as_os_str()));
        self.entry("symlink", result, reply);
    }

    fn readlink(&self, req: &Request, i: INodeNo, reply: ReplyData) {
        match self.run(op!("readlink", req, ino = i.0), self.fs.readlink(ino(i))) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&self.fs, "readlink", &e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = op!(
            "rename",
            req,
            parent = parent.0,
            ?name,
            newparent = newparent.0,
            ?newname
        );
        let rename = self.fs.rename(ino(parent), name, ino(newparent), newname);
        empty(&self.fs, "rename", self.run(op, rename), reply);
    }

    fn link(
        &self,
        req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let op = op!("link", req, ino = i.0, newparent = newparent.0, ?newname);
        let result = self.run(op, self.fs.link(ino(newparent), newname));
        self.entry("link", result, reply);
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let op = op!("write", req, fh = fh.0, offset, size = data.len());
        let clear_setid = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.run(op, self.fs.write(handle(fh), offset, data, clear_setid)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&self.fs, "write", &e)),
        }
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = op!("fsync", req, fh = fh.0);
        empty(
            &self.fs,
            "fsync",
            self.run(op, self.fs.fsync(handle(fh))),
            reply,
        );
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: fuser::FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = op!("fsyncdir", req, ino = ino.0);
        let dir = self::ino(ino);
        empty(
            &self.fs,
            "fsyncdir",
            self.run(op, self.fs.fsyncdir(dir)),
            reply,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let op = op!("create", req, parent = parent.0, ?name);
        match self.run(op, self.fs.create(ino(parent), name, req.pid())) {
            Ok((attr, opened)) => reply.created(
                &self.ttl,
                &file_attr(&attr),
                Generation(0),
                fuser::FileHandle(opened.fh.0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&self.fs, "create", &e)),
        }
    }
}
