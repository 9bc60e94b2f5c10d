//! `mount.rgrid` and `mount.fuse.rgrid`: see the library's doc.

fn main() -> std::process::ExitCode {
    rgrid_mount_helper::main()
}
