//! The backing files of passthrough opens, as the kernel knows them: one BackingId per
//! inode, shared by every passthrough handle of it (the kernel wants the same one for
//! all), closed with the last of them.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Mutex;

use fuser::{BackingId, ReplyOpen};

/// Each inode's BackingId, with how many handles use it.
type ByInode = HashMap<u64, (BackingId, usize)>;

/// BackingIds by inode, and each handle's inode.
#[derive(Debug, Default)]
pub(super) struct Backings(Mutex<(ByInode, HashMap<u64, u64>)>);

impl Backings {
    /// Replies to the open of `ino` as `fh` with passthrough to `file` (or the inode's
    /// backing already registered). Gives `reply` back if the kernel refuses.
    pub(super) fn reply(
        &self,
        reply: ReplyOpen,
        ino: u64,
        fh: u64,
        file: &File,
    ) -> Result<(), (ReplyOpen, std::io::Error)> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (by_ino, by_fh) = &mut *state;
        let (id, users) = match by_ino.entry(ino) {
            std::collections::hash_map::Entry::Occupied(held) => held.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => match reply.open_backing(file) {
                Ok(id) => slot.insert((id, 0)),
                Err(e) => return Err((reply, e)),
            },
        };
        *users += 1;
        by_fh.insert(fh, ino);
        reply.opened_passthrough(fuser::FileHandle(fh), fuser::FopenFlags::empty(), id);
        Ok(())
    }

    /// Handle `fh` is released: its inode's backing closes with its last handle.
    pub(super) fn release(&self, fh: u64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (by_ino, by_fh) = &mut *state;
        let Some(ino) = by_fh.remove(&fh) else {
            return;
        };
        if let Some((_, users)) = by_ino.get_mut(&ino) {
            *users -= 1;
            if *users == 0 {
                by_ino.remove(&ino);
            }
        }
    }
}
