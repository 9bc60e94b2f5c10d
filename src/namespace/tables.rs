//! The inode table: inodes by number and by (parent, name), cached negative lookups, and
//! the rules for recording what the store said lives at a name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::{check_key, DirEntry, InodeKind, InodeNo, NamespaceError, Node, INPUTS};
use crate::artifact::KeptAttrs;
use crate::object::ObjectHeaders;

/// What the store says lives at one name.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) kind: InodeKind,
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) stored_size: u64,
    pub(super) mtime: SystemTime,
    pub(super) etag: Option<String>,
    pub(super) headers: Option<Arc<ObjectHeaders>>,
    pub(super) kept: KeptAttrs,
}

impl Found {
    /// A directory: the prefix `key` has keys below it.
    pub(super) fn directory(key: String, mtime: SystemTime) -> Found {
        Found {
            kind: InodeKind::Directory,
            key,
            size: 0,
            stored_size: 0,
            mtime,
            etag: None,
            headers: None,
            kept: KeptAttrs::default(),
        }
    }

    fn into_node(self, ino: InodeNo, read_only: bool) -> Node {
        Node {
            size: self.size,
            stored_size: self.stored_size,
            etag: self.etag,
            read_only,
            headers: self.headers,
            kept: self.kept,
            ..Node::empty(ino, self.kind, self.key, self.mtime)
        }
    }
}

/// A content size a reader found out for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LearnedSize {
    /// The version it is of.
    pub(super) etag: Option<String>,
    /// The size.
    pub(super) size: u64,
    /// A gzip stream decoded to its end, which tells more than any metadata; else a guess
    /// (its trailer).
    pub(super) exact: bool,
}

#[derive(Debug)]
pub(super) struct Inode {
    pub(super) node: Node,
    pub(super) parent: InodeNo,
    pub(super) name: String,
    /// Kernel references (lookups not yet forgotten).
    pub(super) lookups: u64,
    pub(super) validated: Instant,
    pub(super) listing: Option<(Instant, Arc<Vec<DirEntry>>)>,
    /// This mount's facts win over the store's: a file being written (not yet uploaded)
    /// or a directory made here, which the store may not know yet.
    pub(super) local: bool,
    pub(super) learned: Option<LearnedSize>,
    /// Attributes set on a file being written, to go up with it.
    pub(super) kept_pending: bool,
}

impl Inode {
    /// A freshly validated inode of the store with `lookups` kernel references.
    pub(super) fn new(node: Node, parent: InodeNo, name: &str, lookups: u64) -> Inode {
        Inode {
            node,
            parent,
            name: name.to_owned(),
            lookups,
            validated: Instant::now(),
            listing: None,
            local: false,
            learned: None,
            kept_pending: false,
        }
    }

    /// The size to show for version `etag`, of which the store says `size`.
    pub(super) fn size_for(&self, etag: &Option<String>, size: u64) -> u64 {
        match &self.learned {
            Some(learned) if &learned.etag == etag => learned.size,
            _ => size,
        }
    }
}

/// Negative entries kept at most; past it the oldest half is dropped. Each is a name and
/// a timestamp, so this bounds the cache to a few MiB.
const MAX_ABSENT: usize = 65_536;

#[derive(Debug)]
pub(super) struct Tables {
    pub(super) inodes: HashMap<InodeNo, Inode>,
    pub(super) by_name: HashMap<(InodeNo, String), InodeNo>,
    /// Names the store said do not exist, and when: negative lookups are cached too.
    pub(super) absent: HashMap<(InodeNo, String), Instant>,
    next: u64,
}

/// The key of entry `name` of the directory at `prefix`: a directory's ends in `/`.
pub(super) fn child_key(prefix: &str, name: &str, kind: InodeKind) -> String {
    let suffix = if kind == InodeKind::Directory {
        "/"
    } else {
        ""
    };
    format!("{prefix}{name}{suffix}")
}

/// [`child_key`], refused with ENAMETOOLONG's rule when the store cannot hold it.
pub(super) fn checked_child_key(
    prefix: &str,
    name: &str,
    kind: InodeKind,
) -> Result<String, NamespaceError> {
    let key = child_key(prefix, name, kind);
    check_key(&key).map_err(NamespaceError::InvalidName)?;
    Ok(key)
}

impl Tables {
    /// A table holding the root directory, at `root_prefix`.
    pub(super) fn new(root_prefix: &str, mount_time: SystemTime) -> Tables {
        let node = Node::empty(
            InodeNo::ROOT,
            InodeKind::Directory,
            root_prefix.to_owned(),
            mount_time,
        );
        let mut root = Inode::new(node, InodeNo::ROOT, "", 1);
        root.local = true; // never revalidated
        Tables {
            inodes: HashMap::from([(InodeNo::ROOT, root)]),
            by_name: HashMap::new(),
            absent: HashMap::new(),
            next: 2,
        }
    }

    /// A new inode number.
    pub(super) fn allocate(&mut self) -> InodeNo {
        let ino = InodeNo(self.next);
        self.next += 1;
        ino
    }

    /// Inode `ino`.
    pub(super) fn inode(&self, ino: InodeNo) -> Result<&Inode, NamespaceError> {
        self.inodes
            .get(&ino)
            .ok_or(NamespaceError::UnknownInode(ino.0))
    }

    /// Inode `ino`, to change.
    pub(super) fn inode_mut(&mut self, ino: InodeNo) -> Result<&mut Inode, NamespaceError> {
        self.inodes
            .get_mut(&ino)
            .ok_or(NamespaceError::UnknownInode(ino.0))
    }

    /// Directory `ino`.
    pub(super) fn dir(&self, ino: InodeNo) -> Result<&Inode, NamespaceError> {
        let dir = self.inode(ino)?;
        if dir.node.kind != InodeKind::Directory {
            return Err(NamespaceError::NotADirectory);
        }
        Ok(dir)
    }

    /// Directory `ino`, to change.
    pub(super) fn dir_mut(&mut self, ino: InodeNo) -> Result<&mut Inode, NamespaceError> {
        let dir = self.inode_mut(ino)?;
        if dir.node.kind != InodeKind::Directory {
            return Err(NamespaceError::NotADirectory);
        }
        Ok(dir)
    }

    /// The inode at `parent/name`, if one is in the table.
    pub(super) fn child(&self, parent: InodeNo, name: &str) -> Option<&Inode> {
        let ino = self.by_name.get(&(parent, name.to_owned()))?;
        self.inodes.get(ino)
    }

    /// Drops the cached listing of directory `ino`.
    pub(super) fn forget_listing(&mut self, ino: InodeNo) {
        if let Some(dir) = self.inodes.get_mut(&ino) {
            dir.listing = None;
        }
    }

    /// The work view's `inputs/`: always there (the root's listing merges it in, as it
    /// does local entries), never revalidated, never forgotten, and read-only with all
    /// below it.
    pub(super) fn pin_inputs(&mut self, prefix: &str, mount_time: SystemTime) {
        let ino = self.allocate();
        let node = Node {
            read_only: true,
            ..Node::empty(ino, InodeKind::Directory, prefix.to_owned(), mount_time)
        };
        let mut inode = Inode::new(node, InodeNo::ROOT, INPUTS, 1);
        inode.local = true;
        self.inodes.insert(ino, inode);
        self.by_name.insert((InodeNo::ROOT, INPUTS.to_owned()), ino);
    }

    /// Counts a kernel reference to `node`, bringing its inode back if it was forgotten
    /// since a listing handed out its number.
    pub(super) fn reference(&mut self, parent: InodeNo, name: &str, node: &Node) -> Node {
        if let Some(inode) = self.inodes.get_mut(&node.ino) {
            inode.lookups += 1;
            return inode.node.clone();
        }
        self.inodes
            .insert(node.ino, Inode::new(node.clone(), parent, name, 1));
        self.by_name
            .entry((parent, name.to_owned()))
            .or_insert(node.ino);
        node.clone()
    }

    /// The kernel dropped `n` references to `ino`; true when the inode is now gone.
    pub(super) fn forget(&mut self, ino: InodeNo, n: u64) -> bool {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return false;
        };
        inode.lookups = inode.lookups.saturating_sub(n);
        self.drop_if_unreferenced(ino)
    }

    /// Drops inode `ino` if the kernel holds no reference to it and the store can bring
    /// it back: not one only this mount knows (a file closed in write-back mode and not
    /// uploaded yet, a directory made here), which would vanish from the tree.
    pub(super) fn drop_if_unreferenced(&mut self, ino: InodeNo) -> bool {
        let Some(inode) = self.inodes.get(&ino) else {
            return false;
        };
        if inode.lookups > 0 || ino == InodeNo::ROOT || (inode.local && !inode.node.unlinked) {
            return false;
        }
        let slot = (inode.parent, inode.name.clone());
        self.inodes.remove(&ino);
        if self.by_name.get(&slot) == Some(&ino) {
            self.by_name.remove(&slot);
        }
        true
    }

    /// The directories that hold, at any depth, a file being written here or waiting for
    /// its upload, or a directory made here: they stay while the store has no key under
    /// them yet (or no longer, after another client deleted the last one).
    pub(super) fn holding_local(&self) -> HashSet<InodeNo> {
        let mut held = HashSet::new();
        let local = self.inodes.values().filter(|i| i.local && !i.node.unlinked);
        for inode in local {
            let mut parent = inode.parent;
            while parent != InodeNo::ROOT && held.insert(parent) {
                match self.inodes.get(&parent) {
                    Some(dir) => parent = dir.parent,
                    None => break,
                }
            }
        }
        held
    }

    /// The directory at `parent/name` if it holds something local (see
    /// [`Tables::holding_local`]).
    pub(super) fn held_dir(&self, parent: InodeNo, name: &str) -> Option<Node> {
        let ino = *self.by_name.get(&(parent, name.to_owned()))?;
        let dir = self.inodes.get(&ino)?;
        let holds = dir.node.kind == InodeKind::Directory && !dir.node.unlinked;
        (holds && self.holding_local().contains(&ino)).then(|| dir.node.clone())
    }

    pub(super) fn remember_absent(&mut self, parent: InodeNo, name: &str) {
        if self.absent.len() >= MAX_ABSENT {
            let mut times: Vec<Instant> = self.absent.values().copied().collect();
            let (_, median, _) = times.select_nth_unstable(MAX_ABSENT / 2);
            let cutoff = *median;
            self.absent.retain(|_, at| *at > cutoff);
        }
        self.absent
            .insert((parent, name.to_owned()), Instant::now());
    }

    /// Records what lives at `parent/name`, keeping the inode number while the kind is
    /// the same.
    pub(super) fn upsert(
        &mut self,
        parent: InodeNo,
        name: &str,
        mut found: Found,
        mount_time: SystemTime,
    ) -> Node {
        let slot = (parent, name.to_owned());
        self.absent.remove(&slot);
        // A directory shadows a file of its name; one held by what is local here stays
        // while the store has no key under it.
        if found.kind != InodeKind::Directory {
            if let Some(dir) = self.held_dir(parent, name) {
                return dir;
            }
        }
        let existing = self.by_name.get(&slot).copied();
        if let Some(inode) = existing.and_then(|ino| self.inodes.get_mut(&ino)) {
            if inode.local {
                return inode.node.clone();
            }
            // A listing cannot tell a link from a file: the same version stays what HEAD
            // said.
            let same_version = found.headers.is_none() && inode.node.etag == found.etag;
            if same_version && inode.node.kind == InodeKind::Symlink {
                found.kind = InodeKind::Symlink;
            }
            if inode.node.kind == found.kind {
                update(inode, found, mount_time);
                return inode.node.clone();
            }
        }
        let ino = self.allocate();
        let read_only = self.inodes.get(&parent).is_some_and(|p| p.node.read_only);
        let node = found.into_node(ino, read_only);
        self.inodes
            .insert(ino, Inode::new(node.clone(), parent, name, 0));
        self.by_name.insert(slot, ino);
        node
    }
}

/// Brings `inode` up to what the store says of the same name and kind.
fn update(inode: &mut Inode, found: Found, mount_time: SystemTime) {
    let new_facts = found.headers.is_some() || inode.node.etag != found.etag;
    if new_facts {
        inode.node.size = inode.size_for(&found.etag, found.size);
        inode.node.kept = found.kept;
        inode.node.headers = found.headers;
    }
    inode.node.stored_size = found.stored_size;
    inode.node.mtime = if found.kind == InodeKind::Directory {
        mount_time
    } else {
        found.mtime
    };
    inode.node.etag = found.etag;
    inode.node.key = found.key;
    inode.validated = Instant::now();
}
