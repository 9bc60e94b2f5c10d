//! FUSE passthrough of cached files: a read-only open of a file whose object cache entry
//! is current is answered with the entry as its backing file, so the kernel serves reads
//! and mmap from it with no request to the daemon (Linux 6.9 or later, CAP_SYS_ADMIN).
//!
//! The kernel wants every open of an inode that passthrough opens hold to pass through
//! too, to the same backing file, and a passthrough open of an inode in cached I/O fails.
//! So the modes are kept per inode here: an open passes through only while no open of
//! the inode uses the page cache (and only to the version the others pass through to);
//! any other open while passthrough ones hold is refused with ETXTBSY ("text file
//! busy"), as Linux refuses to write a program that runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{lock, FileHandle};
use crate::namespace::InodeNo;

/// How long an open waits, at most, for RELEASEs still on their way: 40 × 5 ms.
const RELEASE_WAITS: u32 = 40;
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// How one open of an inode does its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IoMode {
    /// Through the daemon (and the page cache, unless direct I/O).
    Cached,
    /// Served by the kernel from a backing file.
    Passthrough,
}

#[derive(Debug, Default)]
struct Modes {
    cached: usize,
    passthrough: usize,
    /// The version (ETag) the passthrough opens serve.
    version: Option<String>,
}

/// Each open handle's inode and mode.
type Handles = HashMap<FileHandle, (InodeNo, IoMode)>;

/// The I/O modes of open files, per inode.
#[derive(Debug)]
pub(super) struct IoModes {
    /// The kernel and our privileges allow passthrough, as far as known.
    enabled: AtomicBool,
    state: Mutex<(HashMap<InodeNo, Modes>, Handles)>,
}

impl IoModes {
    /// Modes with passthrough `enabled` (`--no-passthrough` turns it off).
    pub(super) fn new(enabled: bool) -> IoModes {
        IoModes {
            enabled: AtomicBool::new(enabled),
            state: Mutex::default(),
        }
    }

    /// Passthrough is not to be had on this mount (an old kernel, or no CAP_SYS_ADMIN).
    pub(super) fn disable(&self) -> bool {
        self.enabled.swap(false, Ordering::Relaxed)
    }

    /// The mode of a new open `fh` of `ino`, which could pass through to a backing file
    /// of version `backing` if given; recorded until [`IoModes::release`]. `None` when
    /// passthrough opens of another version, or without a backing, hold the inode.
    pub(super) fn open(
        &self,
        fh: FileHandle,
        ino: InodeNo,
        backing: Option<Option<&str>>,
    ) -> Option<IoMode> {
        let mut state = lock(&self.state);
        let (inodes, handles) = &mut *state;
        let modes = inodes.entry(ino).or_default();
        let enabled = self.enabled.load(Ordering::Relaxed);
        let mode = match backing {
            Some(version) if enabled && modes.cached == 0 => {
                let version = version.map(str::to_owned);
                if modes.passthrough > 0 && modes.version != version {
                    return None;
                }
                modes.version = version;
                modes.passthrough += 1;
                IoMode::Passthrough
            }
            _ if modes.passthrough > 0 => return None,
            _ => {
                modes.cached += 1;
                IoMode::Cached
            }
        };
        handles.insert(fh, (ino, mode));
        Some(mode)
    }

    /// Whether passthrough opens hold `ino` (so only another one of them can open it).
    pub(super) fn held(&self, ino: InodeNo) -> bool {
        let state = lock(&self.state);
        state.0.get(&ino).is_some_and(|m| m.passthrough > 0)
    }

    /// Waits a moment for passthrough opens of `ino` to go: the kernel sends RELEASE
    /// after close(2) has returned, so a file closed just now may still count here.
    /// Returns whether they went.
    pub(super) async fn released(&self, ino: InodeNo) -> bool {
        for _ in 0..RELEASE_WAITS {
            if !self.held(ino) {
                return true;
            }
            tokio::time::sleep(RELEASE_WAIT).await;
        }
        !self.held(ino)
    }

    /// The kernel refused passthrough for `fh`: it is opened with the page cache.
    pub(super) fn refused(&self, fh: FileHandle) {
        let mut state = lock(&self.state);
        let (inodes, handles) = &mut *state;
        if let Some((ino, mode)) = handles.get_mut(&fh) {
            if *mode == IoMode::Passthrough {
                *mode = IoMode::Cached;
                let modes = inodes.entry(*ino).or_default();
                modes.passthrough -= 1;
                modes.cached += 1;
            }
        }
    }

    /// `fh` is closed.
    pub(super) fn release(&self, fh: FileHandle) {
        let mut state = lock(&self.state);
        let (inodes, handles) = &mut *state;
        let Some((ino, mode)) = handles.remove(&fh) else {
            return;
        };
        if let Some(modes) = inodes.get_mut(&ino) {
            match mode {
                IoMode::Cached => modes.cached -= 1,
                IoMode::Passthrough => modes.passthrough -= 1,
            }
            if modes.cached == 0 && modes.passthrough == 0 {
                inodes.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_and_cached_opens_of_an_inode_never_mix() {
        let modes = IoModes::new(true);
        let ino = InodeNo(7);
        let open = |fh, backing| modes.open(FileHandle(fh), ino, backing);
        assert_eq!(open(1, Some(Some("v1"))), Some(IoMode::Passthrough));
        assert_eq!(open(2, None), None, "a writer beside passthrough readers");
        assert_eq!(open(3, Some(Some("v2"))), None, "another version");
        assert_eq!(open(4, Some(Some("v1"))), Some(IoMode::Passthrough));
        modes.release(FileHandle(1));
        modes.release(FileHandle(4));
        assert_eq!(open(5, None), Some(IoMode::Cached));
        assert_eq!(
            open(6, Some(Some("v2"))),
            Some(IoMode::Cached),
            "cached holds"
        );
        modes.release(FileHandle(5));
        modes.release(FileHandle(6));
        assert_eq!(open(7, Some(Some("v2"))), Some(IoMode::Passthrough));
        modes.refused(FileHandle(7));
        assert!(modes.disable());
        assert_eq!(open(8, Some(Some("v2"))), Some(IoMode::Cached), "disabled");
    }
}
