//! `Attr`: stat(2) fields of an inode, from the namespace's facts and the mount's owner and
//! mode settings.

use std::time::SystemTime;

use crate::namespace::{InodeKind, InodeNo, Node};

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
        let (mut perm, nlink) = match node.kind {
            InodeKind::File => (node.kept.mode.unwrap_or(self.file_mode), 1),
            InodeKind::Directory => (self.dir_mode, 2),
            InodeKind::Symlink => (0o777, 1),
        };
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
