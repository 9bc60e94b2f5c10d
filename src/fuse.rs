//! `FuseAdapter`: the thin wrapper that binds [`RgridFs`] to fuser. Each callback that
//! reaches the store opens a span, runs the fuser-free operation on the tokio runtime, and turns the result into a
//! reply or an errno. No filesystem logic lives here; `mount` runs the session.

use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, SessionACL, SessionUnmounter, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use tracing::{debug, warn, Instrument};

use crate::artifact::KeptAttrs;
use crate::fs::{Attr, FsError, OpenMode, RgridFs, Severity};
use crate::namespace::{InodeKind, InodeNo as Ino};

/// The largest read or write one FUSE request carries (256 pages, the kernel's maximum).
const MAX_REQUEST: u32 = crate::readahead::MAX_REQUEST as u32;
/// Asynchronous requests (read-ahead) the kernel may keep in flight.
const MAX_BACKGROUND: u16 = 64;

/// Session settings for the kernel side.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Let users other than the mounting one in.
    pub allow_other: bool,
    /// How long the kernel may cache attributes and entries.
    pub attr_ttl: Duration,
    /// fuser worker threads.
    pub threads: usize,
    /// Mount read-only: the kernel refuses every change (EROFS) before asking us.
    pub read_only: bool,
}

/// The fuser binding of one mount.
#[derive(Debug)]
pub struct FuseAdapter {
    fs: Arc<RgridFs>,
    runtime: Handle,
    ttl: Duration,
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

fn ino(i: INodeNo) -> Ino {
    Ino(i.0)
}

/// The span of one FUSE request: its name, request id and arguments.
macro_rules! span {
    ($op:literal, $req:ident $(, $($field:tt)*)?) => {
        tracing::debug_span!($op, req = $req.unique().0 $(, $($field)*)?)
    };
}

/// Logs a failure once, at the level the error carries, and gives its errno.
fn errno(op: &str, err: &FsError) -> Errno {
    match err.severity() {
        Severity::Debug => debug!(op, "{err}"),
        Severity::Warn => warn!(op, "{err}"),
    }
    Errno::from_i32(err.errno())
}

/// An xattr reply: the size alone when asked with size 0, ERANGE when it does not fit.
fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    match size {
        0 => reply.size(len),
        n if n < len => reply.error(Errno::ERANGE),
        _ => reply.data(value),
    }
}

impl FuseAdapter {
    /// Binds `fs`, running its operations on `runtime`.
    pub fn new(fs: Arc<RgridFs>, runtime: Handle, ttl: Duration) -> Self {
        FuseAdapter { fs, runtime, ttl }
    }

    /// Runs one operation on the runtime, inside its request span.
    fn run<F: Future>(&self, span: tracing::Span, op: F) -> F::Output {
        self.runtime.block_on(op.instrument(span))
    }

    /// Runs `op`, which replies itself, here if it can finish at once (data already
    /// fetched: no thread hop), else as a task: an operation waiting on the store (a
    /// stalled body waits up to the stall timeout) then holds no FUSE thread, which stay
    /// free for lookups, and its GET runs on the runtime's threads beside its connection.
    fn run_or_spawn<F>(&self, span: tracing::Span, op: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let _runtime = self.runtime.enter();
        let mut op = Box::pin(op.instrument(span));
        // A future polled once and moved is polled again with the task's waker, which
        // replaces the no-op one it registered here.
        if futures::FutureExt::now_or_never(&mut op).is_none() {
            self.runtime.spawn(op);
        }
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Take the largest read-ahead the kernel offers, up to the 1 MiB one request can
        // carry (max_pages is negotiated from it and max_write), and let it keep many
        // read-ahead requests in flight: the read engine serves them concurrently.
        if let Err(max) = config.set_max_readahead(MAX_REQUEST) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        // readdirplus hands attributes over with the entries: `ls -l` of N files then
        // costs no lookup round trip per file.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        // O_TRUNC arrives with the open instead of as a separate truncate beforehand.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
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
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.run(
            span!("lookup", req, parent = parent.0, ?name),
            self.fs.lookup(ino(parent), name),
        ) {
            Ok(attr) => reply.entry(&self.ttl, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        self.fs.forget(ino(i), nlookup);
    }

    fn getattr(&self, req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.run(span!("getattr", req, ino = i.0), self.fs.getattr(ino(i))) {
            Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn open(&self, req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode {
            write: flags.acc_mode() != OpenAccMode::O_RDONLY,
            truncate: flags.0 & libc::O_TRUNC != 0,
            caller: req.pid(),
        };
        match self.run(span!("open", req, ino = i.0), self.fs.open(ino(i), mode)) {
            Ok(opened) => {
                let mut flags = FopenFlags::empty();
                flags.set(FopenFlags::FOPEN_KEEP_CACHE, opened.keep_cache);
                flags.set(FopenFlags::FOPEN_DIRECT_IO, opened.direct_io);
                reply.opened(FileHandle(opened.fh), flags)
            }
            Err(e) => reply.error(errno("open", &e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let read = async move {
            match fs.read(fh.0, offset, size).await {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => reply.error(errno("read", &e)),
            }
        };
        self.run_or_spawn(span!("read", req, fh = fh.0, offset, size), read);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.runtime.block_on(self.fs.release(fh.0));
        reply.ok();
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let closer = Some(req.pid());
        match self.run(span!("flush", req, fh = fh.0), self.fs.flush(fh.0, closer)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("flush", &e)),
        }
    }

    fn opendir(&self, req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.run(span!("opendir", req, ino = i.0), self.fs.opendir(ino(i))) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.fs.readdir(fh.0, offset, false, |line| {
            let (ino, kind) = (INodeNo(line.attr.ino.0), file_type(line.attr.kind));
            !reply.add(ino, line.next_offset, kind, line.name)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let result = self.fs.readdir(fh.0, offset, true, |line| {
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
            Err(e) => reply.error(errno("readdirplus", &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let span = span!("getxattr", req, ino = i.0, ?name);
        match self.run(span, self.fs.getxattr(ino(i), name)) {
            Ok(value) => reply_xattr(reply, &value, size),
            Err(e) => reply.error(errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        let span = span!("listxattr", req, ino = i.0);
        match self.run(span, self.fs.listxattr(ino(i))) {
            Ok(names) => reply_xattr(reply, &names, size),
            Err(e) => reply.error(errno("listxattr", &e)),
        }
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
        let span = span!("setxattr", req, ino = i.0, ?name);
        match self.run(span, self.fs.setxattr(ino(i), name, value)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("setxattr", &e)),
        }
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let span = span!("removexattr", req, ino = i.0, ?name);
        match self.run(span, self.fs.removexattr(ino(i), name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("removexattr", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // An object store has no fixed capacity; report a large free space so that tools
        // which check before writing (cp, rsync) go ahead.
        const BLOCKS: u64 = 1 << 40;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, 1 << 32, 1 << 32, 4096, 255, 4096);
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
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let span = span!("setattr", req, ino = i.0, ?size, ?mode, ?mtime);
        let kept = KeptAttrs {
            mode: mode.map(|m| (m & 0o7777) as u16),
            mtime: mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            }),
        };
        let fh = fh.map(|f| f.0);
        let result = self.run(span, self.fs.setattr(ino(i), size, fh, kept));
        match result {
            Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
            Err(e) => reply.error(errno("setattr", &e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
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
        match self.run(
            span!("mkdir", req, parent = parent.0, ?name),
            self.fs.mkdir(ino(parent), name),
        ) {
            Ok(attr) => reply.entry(&self.ttl, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno("mkdir", &e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(
            span!("unlink", req, parent = parent.0, ?name),
            self.fs.unlink(ino(parent), name),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", &e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(
            span!("rmdir", req, parent = parent.0, ?name),
            self.fs.rmdir(ino(parent), name),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", &e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let span = span!("symlink", req, parent = parent.0, ?name, ?target);
        match self.run(span, self.fs.symlink(ino(parent), name, target.as_os_str())) {
            Ok(attr) => reply.entry(&self.ttl, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno("symlink", &e)),
        }
    }

    fn readlink(&self, req: &Request, i: INodeNo, reply: ReplyData) {
        match self.run(span!("readlink", req, ino = i.0), self.fs.readlink(ino(i))) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", &e)),
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
        let span = span!(
            "rename",
            req,
            parent = parent.0,
            ?name,
            newparent = newparent.0,
            ?newname
        );
        match self.run(
            span,
            self.fs.rename(ino(parent), name, ino(newparent), newname),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let span = span!("write", req, fh = fh.0, offset, size = data.len());
        match self.run(span, self.fs.write(fh.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", &e)),
        }
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.run(span!("fsync", req, fh = fh.0), self.fs.flush(fh.0, None)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", &e)),
        }
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
        match self.run(
            span!("create", req, parent = parent.0, ?name),
            self.fs.create(ino(parent), name, req.pid()),
        ) {
            Ok((attr, opened)) => reply.created(
                &self.ttl,
                &file_attr(&attr),
                Generation(0),
                FileHandle(opened.fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno("create", &e)),
        }
    }
}

/// Mounts `adapter` on `mountpoint` and serves it until the mount goes away: `umount`,
/// `fusermount3 -u`, or SIGINT/SIGTERM to this process (which unmount cleanly).
pub fn serve(
    adapter: FuseAdapter,
    mountpoint: &Path,
    config: &SessionConfig,
) -> std::io::Result<()> {
    let runtime = adapter.runtime.clone();
    let mut options = vec![
        MountOption::FSName("rgrid".into()),
        MountOption::Subtype("rgrid".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if config.read_only {
        options.push(MountOption::RO);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.acl = if config.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fuse_config.n_threads = Some(config.threads);
    fuse_config.clone_fd = true;
    let mut session = fuser::Session::new(adapter, mountpoint, &fuse_config)?;
    runtime.spawn(unmount_on_signal(
        session.unmount_callable(),
        mountpoint.to_owned(),
    ));
    raise_kernel_readahead(&runtime, mountpoint.to_owned());
    tracing::info!("mounted");
    session.run()
}

/// Unmounts on SIGTERM or SIGINT, and the session ends. A busy mount (a file open, a
/// shell's working directory inside) is detached instead, as `umount -l` does: it leaves
/// the mount table at once, its open files keep working, and the session ends when the
/// last one is closed, its upload done. Refusing, as a plain unmount does, would leave
/// the daemon deaf to every later signal until systemd kills it with files half written.
async fn unmount_on_signal(mut unmounter: SessionUnmounter, mountpoint: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let shown = mountpoint.display();
    // `gone`: out of the mount table, unmounted or detached.
    let (mut unmount_tried, mut gone) = (false, false);
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if gone {
            tracing::info!("signal received: {shown} is unmounted already; exiting when its last open file is closed");
            continue;
        }
        if !unmount_tried {
            unmount_tried = true;
            tracing::info!("signal received, unmounting {shown}");
            // The unmount may run fusermount3 and wait for it.
            match tokio::task::block_in_place(|| unmounter.unmount()) {
                Ok(()) => {
                    gone = true;
                    continue;
                }
                Err(e) => warn!("unmount of {shown} failed: {e}"),
            }
        }
        // Busy (a file open, a shell inside), or a detach that failed before: the
        // unmounter has given its mount up, so every later signal tries the detach.
        warn!("detaching {shown}: its open files keep working, and the daemon exits when the last one is closed");
        gone = detach(&mountpoint).await;
    }
}

/// Lazy unmount: `fusermount3 -u -z` (any user), else `umount -l` (root).
async fn detach(mountpoint: &Path) -> bool {
    use tokio::process::Command;
    for (program, flags) in [("fusermount3", ["-u", "-z"]), ("umount", ["-l", "--"])] {
        let outcome = Command::new(program)
            .args(flags)
            .arg(mountpoint)
            .output()
            .await;
        match outcome {
            Ok(out) if out.status.success() => return true,
            Ok(out) => warn!(
                "{program} {}: {}",
                flags.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => debug!("{program}: {e}"),
        }
    }
    false
}

/// Kernel read-ahead for this mount, in KiB. FUSE starts at 128 KiB; larger read-ahead
/// means fewer, larger requests (up to 1 MiB each) for sequential readers.
const KERNEL_READAHEAD_KB: u64 = crate::readahead::KERNEL_READAHEAD >> 10;

/// Raises the mount's read-ahead through sysfs (root only; best effort). It needs a stat
/// of the mount point, which the session answers, so it runs beside the session loop.
fn raise_kernel_readahead(runtime: &Handle, mountpoint: PathBuf) {
    runtime.spawn_blocking(move || {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(&mountpoint)?.dev();
        let knob = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        std::fs::write(&knob, KERNEL_READAHEAD_KB.to_string())
            .inspect_err(|e| debug!("read-ahead left as is ({knob}: {e})"))
    });
}
