//! `mount.rgrid`: the helper mount(8) runs for `mount -t rgrid` and for fstab lines of
//! type `rgrid` (and, as `mount.fuse.rgrid`, of type `fuse.rgrid`). It turns
//! `SOURCE DIR -o OPTIONS` into the `rgrid-mount` command that mounts the same thing,
//! runs it, and returns once the mount is live or has failed, as mount(8) expects.
//! It does not link the filesystem: the options are a pure translation
//! ([`options::translate`]), checked against `rgrid-mount`'s flags by a test.

pub mod options;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use options::{split_options, translate, Invocation};

/// What mount(8) passed: `SOURCE DIR [-sfnv] [-o OPTIONS] [-t TYPE] [-N NS]`.
#[derive(Debug, Default)]
struct Call {
    source: Option<String>,
    mountpoint: Option<PathBuf>,
    options: Vec<String>,
    /// `-f`: check everything, mount nothing.
    fake: bool,
    /// `-v`: say what runs.
    verbose: bool,
}

fn parse_call(args: Vec<OsString>) -> Result<Call, String> {
    let mut call = Call::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_str().ok_or("arguments must be UTF-8")?.to_owned();
        match text.as_str() {
            "-o" => {
                let value = args.next().ok_or("-o needs options")?;
                let value = value.to_str().ok_or("options must be UTF-8")?;
                call.options.extend(split_options(value));
            }
            "-t" => {
                args.next(); // the type is ours
            }
            // Mounting into another mount namespace would need setns; not done, so
            // refused rather than mounted in the wrong one.
            "-N" => return Err("mount namespaces (-N) are not supported".into()),
            flags if flags.starts_with("-o") => call.options.extend(split_options(&flags[2..])),
            flags if flags.starts_with('-') && flags.len() > 1 => {
                for f in flags[1..].chars() {
                    match f {
                        'f' => call.fake = true,
                        'v' => call.verbose = true,
                        's' | 'n' => {} // sloppy, no mtab: nothing to do for us
                        other => return Err(format!("unknown flag -{other}")),
                    }
                }
            }
            _ if call.source.is_none() => call.source = Some(text),
            _ if call.mountpoint.is_none() => call.mountpoint = Some(PathBuf::from(text)),
            _ => return Err(format!("unexpected argument `{text}`")),
        }
    }
    Ok(call)
}

/// Refuses a credentials file that others can read: the secret would not be one.
fn check_credentials_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("credentials_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "credentials_file {} has mode {mode:04o}: it must be 0600 or stricter",
            path.display()
        ));
    }
    Ok(())
}

/// The `rgrid-mount` to run: `$RGRID_MOUNT`, else the one installed beside this helper,
/// else the one on PATH.
fn rgrid_mount() -> PathBuf {
    if let Some(path) = std::env::var_os("RGRID_MOUNT") {
        return path.into();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("rgrid-mount")))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| "rgrid-mount".into())
}

fn command(invocation: &Invocation) -> Command {
    let mut cmd = Command::new(rgrid_mount());
    cmd.args(&invocation.args);
    if let Some(file) = &invocation.credentials_file {
        cmd.env("AWS_SHARED_CREDENTIALS_FILE", file);
    }
    if let Some(profile) = &invocation.profile {
        cmd.env("AWS_PROFILE", profile);
    }
    cmd
}

/// Runs the helper on `args` (without the program name); returns only on failure, with
/// the line to print, or with `Ok` for a fake mount.
pub fn run(args: Vec<OsString>) -> Result<(), String> {
    let call = parse_call(args)?;
    let (Some(source), Some(mountpoint)) = (&call.source, &call.mountpoint) else {
        return Err("usage: mount.rgrid BUCKET[/PREFIX] DIR [-o OPTIONS]".into());
    };
    let invocation = translate(source, mountpoint, &call.options).map_err(|e| e.to_string())?;
    if let Some(file) = &invocation.credentials_file {
        check_credentials_file(file)?;
    }
    let mut cmd = command(&invocation);
    if call.verbose {
        eprintln!("mount.rgrid: running {cmd:?}");
    }
    if call.fake {
        return Ok(());
    }
    // rgrid-mount detaches its daemon and exits once the mount is up, or with its error.
    let err = cmd.exec();
    Err(format!("running {}: {err}", rgrid_mount().display()))
}

/// The helper's `main`: one line on stderr, under the name it was run by, and mount(8)'s
/// exit code 1 for an incorrect invocation; otherwise `rgrid-mount`'s own outcome.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let name = args
        .next()
        .and_then(|a| Some(Path::new(&a).file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "mount.rgrid".into());
    match run(args.collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("{name}: {line}");
            ExitCode::from(1)
        }
    }
}
