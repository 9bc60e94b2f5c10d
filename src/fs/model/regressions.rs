//! The cases the reference model found, each kept by name as the sequence it shrank to,
//! with the fault it showed; and the helpers that run one.

use super::{run, Case, Checked, FilePath, Mode, Op};

fn at(dir: &'static str, name: &'static str) -> FilePath {
    FilePath { dir, name }
}

fn regression(objects: Vec<(FilePath, usize, u8)>, ops: Vec<Op>) -> Checked {
    regression_in(false, objects, ops)
}

/// A write-back case whose landings race its steps, run `runs` times.
fn write_back_runs(runs: usize, objects: Vec<(FilePath, usize, u8)>, ops: Vec<Op>) -> Checked {
    for _ in 0..runs {
        regression_in(true, objects.clone(), ops.clone())?;
    }
    Ok(())
}

fn regression_in(write_back: bool, objects: Vec<(FilePath, usize, u8)>, ops: Vec<Op>) -> Checked {
    let case = Case {
        objects,
        cached: false,
        write_back,
        ops,
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run(case))
}

/// Found by the model: a rename took the object from under a writer's lazy fill, and an
/// ftruncate whose copy failed had already dropped the tail from the fill: the read
/// after it gave zeros where the file had its bytes.
#[test]
fn a_writer_renamed_before_its_first_change_keeps_its_bytes() -> Checked {
    regression(
        vec![(at("d1", "b"), 2517, 0)],
        vec![
            Op::Open(at("d1", "b"), Mode::Write),
            Op::Rename(at("d1", "b"), at("", "a")),
            Op::Ftruncate(0, 1),
            Op::Read(0, 1, 1),
        ],
    )
}

/// Found by the model: a file opened for writing and closed unchanged kept the writer's
/// facts, so a rename after the store replaced it was pinned to the old version (EIO).
#[test]
fn a_file_closed_unchanged_is_the_stores_again() -> Checked {
    regression(
        vec![(at("", "b"), 0, 0)],
        vec![
            Op::Open(at("", "b"), Mode::Write),
            Op::Put(at("", "b"), 0, 0),
            Op::Release(0),
            Op::Rename(at("", "b"), at("", "a")),
        ],
    )
}

/// Found by the model in write-back mode: a file flushed (queued), written again, then
/// unlinked left its first content in the store when that upload landed after the file
/// moved on: the namespace never heard of the object, and the unlink deleted nothing.
/// The landing races the next steps, so the case runs 20 times (without the fix, most
/// runs failed).
#[test]
fn a_write_back_file_written_again_and_unlinked_leaves_nothing() -> Checked {
    write_back_runs(
        20,
        vec![(at("d2", "a"), 248, 0)],
        vec![
            Op::Create(at("d2", "b")),
            Op::Flush(0),
            Op::Write(0, Some(5521), 801, 122),
            Op::Unlink(at("d2", "b")),
            Op::Close(0),
            Op::Write(0, Some(847), 2093, 83),
            Op::Rename(at("d2", "a"), at("", "c")),
            Op::Open(at("d1", "a"), Mode::Write),
            Op::Stat(at("d1", "b")),
            Op::Chmod(at("d2", "a"), 493),
        ],
    )
}

/// Found by the model in write-back mode: after an fsync, later writes left the file
/// showing the fsynced version, so once closed (queued) stat showed the store's older
/// size; and the fsync's own landing, taken up later, was matched to the spool queued
/// since. Writes make the file's facts the writer's again, and a landing a caller
/// waited for is not taken up twice.
#[test]
fn a_write_back_close_after_an_fsync_shows_its_own_size() -> Checked {
    write_back_runs(
        10,
        vec![(at("", "a"), 50, 2)],
        vec![
            Op::Open(at("", "a"), Mode::Truncate),
            Op::Write(0, None, 2967, 191),
            Op::Flush(0),
            Op::Write(0, None, 2280, 237),
            Op::Fsync(0),
            Op::Ftruncate(0, 575),
            Op::Write(0, Some(2062), 1974, 26),
            Op::Close(0),
            Op::Stat(at("", "a")),
        ],
    )
}

/// Found by the model: a touch of a file whose writer changed nothing, after another
/// client replaced it, left the mount showing the old version's size for good once the
/// writer closed (its upload could not copy the version gone, and kept the file local).
#[test]
fn a_touch_of_a_version_replaced_behind_an_idle_writer_shows_the_store() -> Checked {
    regression(
        vec![(at("d2", "a"), 1, 0)],
        vec![
            Op::Open(at("d2", "a"), Mode::Write),
            Op::Put(at("d2", "a"), 2, 0),
            Op::Touch(at("d2", "a"), 0),
            Op::Release(0),
            Op::Stat(at("d2", "a")),
        ],
    )
}

/// Found by the model in write-back mode: a touch just after a close, while that upload
/// was going up, recorded the queued upload again with the new mtime. The upload in
/// flight read its record before that and, seeing the record's order change, took its
/// file for superseded and dropped it: the file never reached the store. Or it landed
/// with the old mtime, which the file then showed. A record made again is the same
/// content; its landing, not the older one's, is the one the file takes up.
#[test]
fn a_touch_just_after_a_write_back_close_is_kept_and_the_file_lands() -> Checked {
    write_back_runs(
        20,
        vec![(at("d2", "c"), 39, 150)],
        vec![
            Op::Create(at("d2", "a")),
            Op::Close(0),
            Op::Touch(at("d2", "a"), 1251436395),
        ],
    )
}

/// Found by the model in write-back mode: a file flushed (queued) in a directory whose
/// only stored key another client then deleted: the directory's lookup asked the store,
/// which had nothing under it until the upload landed, and gave ENOENT. A directory
/// holding a file being written or waiting for its upload stays, listed and found.
#[test]
fn a_directory_holding_a_queued_file_stays_when_its_last_key_goes() -> Checked {
    write_back_runs(
        10,
        vec![(at("d2", "c"), 432, 24)],
        vec![
            Op::Create(at("d2", "a")),
            Op::Flush(0),
            Op::Unlink(at("d2", "c")),
            Op::Create(at("d2", "a")),
        ],
    )
}

/// The same for a file being written and not flushed: its directory stays, as on a
/// local disk.
#[test]
fn a_directory_stays_while_a_file_is_written_in_it() -> Checked {
    regression(
        vec![(at("d2", "c"), 432, 24)],
        vec![
            Op::Create(at("d2", "a")),
            Op::Unlink(at("d2", "c")),
            Op::Readdir(""),
            Op::Stat(at("d2", "a")),
            Op::Close(0),
            Op::Readdir("d2"),
        ],
    )
}

/// Found by the model in write-back mode: a truncate of the path while a writer was open
/// uploads at once, and made the store's new version the file's facts; the writer's
/// close then queued its own content, but stat showed the truncated size until that
/// upload landed. A queued close makes the file what was closed.
#[test]
fn a_write_back_close_after_a_path_truncate_shows_what_it_closed() -> Checked {
    regression_in(
        true,
        vec![],
        vec![
            Op::Create(at("", "c")),
            Op::Close(0),
            Op::Open(at("", "c"), Mode::Write),
            Op::Write(0, Some(5583), 595, 174),
            Op::Truncate(at("", "c"), 4983),
            Op::Close(0),
            Op::Stat(at("", "c")),
        ],
    )
}

/// Found by the model in write-back mode: a file flushed (queued) and written again, then
/// opened for reading before the upload landed: the writer's copy of the queued spool
/// dropped the file's record of it, so the reader read the store's older version, which
/// the landing then replaced (EIO). The queued content stays the file's last closed
/// one until the writer closes; and a reader beside a writer reads a version at its own
/// size, not at the writer's.
#[test]
fn a_reader_opened_after_a_write_back_flush_reads_what_was_closed() -> Checked {
    write_back_runs(
        10,
        vec![(at("d2", "a"), 10, 0)],
        vec![
            Op::Create(at("d2", "a")),
            Op::Flush(0),
            Op::Write(0, Some(1802), 729, 0),
            Op::Open(at("d2", "a"), Mode::Read),
            Op::Read(1, 0, 1),
        ],
    )
}

/// Found by the model in write-back mode: a file closed (queued), opened again with
/// O_TRUNC and written: the first close's landing, taken up after, made the file the
/// store's empty version while the new writer held its bytes, and stat showed 0. A
/// landing leaves a file open for writing with its writer's facts.
#[test]
fn a_write_back_landing_leaves_a_file_being_written_again_its_writers_size() -> Checked {
    write_back_runs(
        10,
        vec![],
        vec![
            Op::Create(at("", "c")),
            Op::Close(0),
            Op::Create(at("", "c")),
            Op::Write(0, Some(1722), 2370, 201),
            Op::Stat(at("", "c")),
        ],
    )
}

/// Found by the model, about once in 50 loaded runs: a sync just as a write-back upload
/// landed found the journal entry still there, then the upload finished and left the
/// queue, and the sync took it for one nobody was sending ("pending, not being
/// uploaded"). Whether anyone is at an upload is now read before the journal.
#[test]
fn a_sync_as_a_write_back_upload_lands_waits_for_it() -> Checked {
    write_back_runs(
        100,
        vec![(at("d2", "c"), 1432, 211)],
        vec![
            Op::Touch(at("d2", "c"), 782126497),
            Op::Create(at("d2", "c")),
        ],
    )
}

/// Found by the model: a directory rename copied each object to its new key, a new
/// version, and a file open for writing in it kept the old version's ETag, so its own
/// rename afterwards, pinned to that ETag, was EIO. The copies' versions are the files'
/// now.
#[test]
fn a_file_renamed_after_its_directory_while_open_is_renamed() -> Checked {
    regression(
        vec![(at("d1", "b"), 700, 3)],
        vec![
            Op::Open(at("d1", "b"), Mode::Write),
            Op::RenameDir("d1", "d2"),
            Op::Rename(at("d2", "b"), at("", "a")),
            Op::Write(0, Some(10), 20, 4),
            Op::Close(0),
        ],
    )
}

/// Found by the model: a directory rename moved a queued write-back upload to the new
/// name, the upload landed there, and the rename's copy of the file's older object then
/// landed on top of it. An object whose file has an upload pending is not copied now,
/// only removed from the old name.
#[test]
fn a_directory_rename_never_copies_an_older_object_over_a_queued_upload() -> Checked {
    write_back_runs(
        50,
        vec![(at("d1", "b"), 900, 1)],
        vec![
            Op::Create(at("d1", "b")),
            Op::Write(0, None, 30, 2),
            Op::Flush(0),
            Op::RenameDir("d1", "d2"),
            Op::Rename(at("d2", "b"), at("", "a")),
        ],
    )
}

/// Found by the model: a directory held only by a file being written in it (another
/// client deleted its last key), beside a stored file of the same name: the lookup found
/// the file, and the directory, with the file being written in it, was gone. A
/// directory holding what is local here stays, and shadows the file as any directory.
#[test]
fn a_directory_holding_a_file_being_written_shadows_a_stored_file_of_its_name() -> Checked {
    regression(
        vec![(at("d1", "d1"), 0, 0)],
        vec![
            Op::Put(at("", "d1"), 0, 0),
            Op::Create(at("d1", "a")),
            Op::Unlink(at("d1", "d1")),
            Op::Truncate(at("d1", "a"), 0),
            Op::Readdir(""),
        ],
    )
}

/// Found by the model: a truncate(2) of a file being written, just as another client
/// made a directory of its name: the file was cut and uploaded, and the reply, which
/// asked the store again, was ENOENT. A change's reply shows the inode it changed.
#[test]
fn a_truncate_as_its_name_becomes_a_directory_replies_with_what_it_made() -> Checked {
    regression(
        vec![],
        vec![
            Op::Create(at("", "d1")),
            Op::Put(at("d1", "b"), 0, 0),
            Op::Truncate(at("", "d1"), 8473),
        ],
    )
}

/// Found by the model (the model's fault): a touch of a file open by two writers, then
/// the file replaced behind them. The first close could not copy the version the mtime
/// was set on and dropped it, as designed, for the file and so for its other writer too,
/// whose close then had nothing to upload; the model still expected that close to fail.
#[test]
fn a_touch_dropped_at_one_writers_close_is_dropped_for_the_other() -> Checked {
    regression(
        vec![(at("d2", "c"), 1, 0)],
        vec![
            Op::Open(at("d2", "c"), Mode::Write),
            Op::Open(at("d2", "c"), Mode::Write),
            Op::Touch(at("d2", "c"), 0),
            Op::Put(at("d2", "c"), 0, 0),
        ],
    )
}
