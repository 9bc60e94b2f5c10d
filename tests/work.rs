//! The work view (`--work <exec_id>`): one execution as its script's `/work`, seen through
//! a bind mount the way a container sees it.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{run, Mount, TestStore};

fn erofs<T: std::fmt::Debug>(result: std::io::Result<T>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{what}: {err}");
}

/// A bind mount of `source` that is undone on drop, as `docker run -v` would make.
struct BindMount(tempfile::TempDir);

impl BindMount {
    fn new(source: &std::path::Path) -> BindMount {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(dir.path()));
        BindMount(dir)
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn inputs_are_read_only_and_everything_else_is_an_output() {
    let store = TestStore::start();
    store.put("executions/e1/inputs/data.csv", "a,b\n1,2\n");
    store.put("executions/e1/inputs/sub/more.txt", "more");
    store.put("executions/e1/outputs/earlier.log", "earlier");
    store.put("executions/e2/outputs/other.txt", "not this execution");
    let mount = Mount::new(&store, &["--work", "e1"]);
    let bind = BindMount::new(&mount.path);
    let work = bind.0.path();

    let mut root: Vec<String> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    root.sort();
    assert_eq!(root, ["earlier.log", "inputs"]);
    assert_eq!(
        fs::read_to_string(work.join("inputs/data.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    assert_eq!(
        fs::read_to_string(work.join("inputs/sub/more.txt")).unwrap(),
        "more"
    );
    let mode = |p: &str| fs::metadata(work.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (mode("inputs"), mode("inputs/data.csv"), mode("earlier.log")),
        (0o555, 0o444, 0o644)
    );

    // The script's outputs, written through the bind mount, are in the store at close.
    fs::create_dir_all(work.join("results")).unwrap();
    fs::write(work.join("results/out.json"), "{\"ok\":true}").unwrap();
    let (body, _) = store
        .get("executions/e1/outputs/results/out.json")
        .expect("output stored at close");
    assert_eq!(body, b"{\"ok\":true}");
    assert!(store.get("executions/e1/outputs/inputs/x").is_none());

    // Nothing under inputs/ changes, and inputs/ itself stays.
    let inputs = work.join("inputs");
    erofs(fs::write(inputs.join("new.txt"), "x"), "create");
    erofs(
        OpenOptions::new().write(true).open(inputs.join("data.csv")),
        "open for writing",
    );
    erofs(fs::remove_file(inputs.join("data.csv")), "unlink");
    erofs(fs::create_dir(inputs.join("d")), "mkdir");
    erofs(fs::remove_dir(inputs.join("sub")), "rmdir");
    erofs(
        fs::rename(inputs.join("data.csv"), work.join("moved.csv")),
        "rename out of inputs",
    );
    erofs(
        fs::rename(work.join("earlier.log"), inputs.join("earlier.log")),
        "rename into inputs",
    );
    erofs(fs::rename(&inputs, work.join("renamed")), "rename inputs");
    let rmdir = fs::remove_dir(&inputs).expect_err("rmdir inputs");
    assert!(
        matches!(rmdir.raw_os_error(), Some(libc::EROFS | libc::ENOTEMPTY)),
        "{rmdir}"
    );
    assert!(store.get("executions/e1/inputs/data.csv").is_some());
    assert_eq!(
        fs::read_to_string(work.join("earlier.log")).unwrap(),
        "earlier"
    );
}

#[test]
fn an_execution_without_inputs_still_shows_an_empty_inputs_directory() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &["--work", "fresh"]);
    assert!(fs::read_dir(mount.join("inputs")).unwrap().next().is_none());
    fs::write(mount.join("out.txt"), "made").unwrap();
    assert!(store.get("executions/fresh/outputs/out.txt").is_some());
}

#[test]
fn a_bad_execution_id_is_refused_before_mounting() {
    let store = TestStore::start();
    for id in ["a/b", "..", ""] {
        let (status, stderr) = Mount::try_new(&store, &["--work", id]).err().expect(id);
        assert!(!status.success());
        assert!(stderr.contains("--work"), "{id}: {stderr}");
    }
    let err = Mount::try_new(&store, &["--work", "e", "--prefix", "x"]).err();
    assert!(err.is_some_and(|(_, e)| e.contains("cannot be used with")));
}

/// Runs `script` with sh as user nobody; returns whether it succeeded, and its stderr.
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", script])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_container_user_needs_allow_other_and_gets_ownership_from_uid_gid() {
    let store = TestStore::start();
    store.put("executions/e1/inputs/data.csv", "x,y\n");
    let nobody = ["--uid", "65534", "--gid", "65534"];
    let private = Mount::new(&store, &[&["--work", "e1"][..], &nobody].concat());
    let shared = Mount::new(
        &store,
        &[&["--work", "e1", "--allow-other"][..], &nobody].concat(),
    );
    for mount in [&private, &shared] {
        let parent = mount.path.parent().unwrap();
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    }

    let (ok, err) = as_nobody(&format!("ls {}", private.path.display()));
    assert!(!ok && err.contains("Permission denied"), "{err}");

    let work = shared.path.display();
    let (ok, err) = as_nobody(&format!(
        "cat {work}/inputs/data.csv && echo done > {work}/result.txt"
    ));
    assert!(ok, "{err}");
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(shared.join("result.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    let (body, _) = store.get("executions/e1/outputs/result.txt").unwrap();
    assert_eq!(body, b"done\n");
}
