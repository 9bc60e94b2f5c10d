//! The decoded size of a gzip object whose metadata lacks it, worked out at lookup,
//! before any reader: a small stored stream is fetched and decoded whole (every member,
//! as a reader decodes it), so `stat` shows exactly what a read returns; a larger one
//! gives its trailer's ISIZE, which is the size only for a single member under 4 GiB.

use std::io::Write;

use flate2::write::MultiGzDecoder;

use crate::namespace::Node;
use crate::readahead::{ReadEngine, ReadError};

/// Stored streams this small are decoded whole at lookup (one GET of at most this).
pub const DECODED_AT_LOOKUP_MAX: u64 = 1 << 20;

/// Decoded bytes counted at lookup, at most: a stream that inflates past it (a bomb, or
/// a 1,000:1 log) takes its size from the trailer instead of seconds of CPU per `ls`.
const COUNTED_MAX: u64 = 256 << 20;

/// The size a read of `node`'s decoded content ends at, or a guess from its trailer;
/// `None` when neither is known (not a gzip stream, or a trailer that cannot be the
/// size). A failed fetch is an error, for the caller to tell a refusal from a store that
/// may answer later.
pub async fn gzip_decoded_size(engine: &ReadEngine, node: &Node) -> Result<Option<u64>, ReadError> {
    if node.stored_size <= DECODED_AT_LOOKUP_MAX {
        let stored = engine
            .read_small(&node.object_id(), 0..node.stored_size)
            .await?;
        // Up to a second of inflating: off the runtime's threads, as a listing may ask 8.
        let decoded = tokio::task::spawn_blocking(move || (decoded_len(&stored), stored)).await;
        return Ok(match decoded {
            Ok((Some(size), _)) => Some(size),
            // Not a stream that decodes, or one that inflates too far: its trailer, from
            // the bytes at hand.
            Ok((None, stored)) => trailer_size(&stored, node.stored_size),
            Err(_) => None,
        });
    }
    gzip_trailer_size(engine, node).await
}

/// The length `stored` decodes to, as every member of a gzip stream; `None` if it is not
/// one, or inflates past [`COUNTED_MAX`].
fn decoded_len(stored: &[u8]) -> Option<u64> {
    let mut decoder = MultiGzDecoder::new(Counter(0));
    decoder.write_all(stored).ok()?;
    decoder.try_finish().ok()?;
    Some(decoder.get_ref().0)
}

/// A sink that only counts, and refuses bytes past [`COUNTED_MAX`].
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        if self.0 > COUNTED_MAX {
            return Err(std::io::Error::other("inflates past the lookup's count"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size a gzip object's trailer claims (ISIZE: the last member's size mod 2^32),
/// from one small ranged GET; `None` if it cannot be the whole size: 4 GiB of stored
/// bytes or more (ISIZE wraps), or less than stored (a last member that is not the whole
/// content, e.g. bgzip's empty one).
pub(super) async fn gzip_trailer_size(
    engine: &ReadEngine,
    node: &Node,
) -> Result<Option<u64>, ReadError> {
    if node.stored_size >= 1 << 32 {
        return Ok(None);
    }
    let Some(start) = node.stored_size.checked_sub(4) else {
        return Ok(None);
    };
    let bytes = engine
        .read_small(&node.object_id(), start..node.stored_size)
        .await?;
    Ok(trailer_size(&bytes, node.stored_size))
}

/// The size the trailer at the end of `bytes` claims for a stream of `stored_size`
/// bytes, if it can be the whole size.
fn trailer_size(bytes: &[u8], stored_size: u64) -> Option<u64> {
    let start = bytes.len().checked_sub(4)?;
    let isize: [u8; 4] = bytes[start..].try_into().ok()?;
    let size = u64::from(u32::from_le_bytes(isize));
    (stored_size < 1 << 32 && size >= stored_size).then_some(size)
}
