//! `Attr`: stat(2) fields of an inode, from the namespace's facts and the mount's owner and
//! mode settings; `SetAttr`, what a setattr asks to change; `StatFs`, what statfs(2) says
//! of the mount.

use std::time::SystemTime;

use crate::artifact::KeptAttrs;
use crate::namespace::{InodeKind, InodeNo, Node, NAME_MAX};

/// Who owns the files of a mount and which permission bits they show.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    /// st_uid of every inode.
    pub uid: u32,
    /// st_gid of every inode.
    pub gid: u32,
    /// Permission bits of files that keep none of their own.
    pub file_mode: u16,
    /// Permission bits of directories.
    pub dir_mode: u16,
}

/// The stat fields the kernel needs, independent of the FUSE binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: InodeNo,
    /// File or directory.
    pub kind: InodeKind,
    /// st_size.
    pub size: u64,
    /// st_mtime (and ctime, atime).
    pub mtime: SystemTime,
    /// Permission bits.
    pub perm: u16,
    /// st_nlink.
    pub nlink: u32,
    /// st_uid.
    pub uid: u32,
    /// st_gid.
    pub gid: u32,
}

impl Ownership {
    /// The attributes of `node` on this mount.
    pub fn attr(&self, node: &Node) -> Attr {
        let (mut perm, mut nlink) = match node.kind {
            InodeKind::File => (node.kept.mode.unwrap_or(self.file_mode), 1),
            InodeKind::Directory => (self.dir_mode, 2),
            InodeKind::Symlink => (0o777, 1),
        };
        if node.unlinked {
            nlink = 0;
        }
        if node.read_only {
            perm &= !0o222;
        }
        Attr {
            ino: node.ino,
            kind: node.kind,
            size: node.size,
            mtime: node.kept.mtime.unwrap_or(node.mtime),
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// A time a setattr sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The time the request is served (`touch` without a date).
    Now,
    /// A given time (`touch -d`, `cp -p`).
    At(SystemTime),
}

/// What a setattr asks to change; owners and atime are accepted and not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    /// New st_mode, file type bits included.
    pub mode: Option<u32>,
    /// New size (truncate).
    pub size: Option<u64>,
    /// New st_mtime.
    pub mtime: Option<SetTime>,
}

impl SetAttr {
    /// The mode and mtime it sets, as the object's metadata keeps them.
    pub(super) fn kept(&self) -> KeptAttrs {
        KeptAttrs {
            mode: self.mode.map(|m| (m & 0o7777) as u16),
            mtime: self.mtime.map(|t| match t {
                SetTime::Now => SystemTime::now(),
                SetTime::At(t) => t,
            }),
        }
    }
}

/// What statfs(2) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Blocks in all, free, and free to unprivileged users (all the same here).
    pub blocks: u64,
    /// Inodes in all and free.
    pub files: u64,
    /// Block size and fragment size.
    pub block_size: u32,
    /// Longest file name.
    pub name_max: u32,
}

impl StatFs {
    /// An object store has no fixed capacity: a large free space, so that tools which
    /// check before writing (cp, rsync, installers) go ahead.
    pub const UNBOUNDED: StatFs = StatFs {
        blocks: 1 << 40,
        files: 1 << 32,
        block_size: 4096,
        name_max: NAME_MAX as u32,
    };
}
