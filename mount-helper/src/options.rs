//! mount(8) options to `rgrid-mount` arguments, as a pure function: the source field
//! names the bucket (and a prefix), each `-o` option names a long flag of `rgrid-mount`
//! with `_` for `-`, words that only mount(8) and systemd act on are dropped, and secrets
//! are refused: they would show in `ps` and in the mount table.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// A switch: `allow_other` is `--allow-other`.
    Nothing,
    /// `metadata_ttl=5` is `--metadata-ttl=5`.
    Value,
}

/// Every `rgrid-mount` long flag a mount may set, by option name. Not here: `bucket`
/// (the source field names it) and `foreground` (mount(8) waits for the helper, which
/// returns once the mount is live, so the daemon always detaches).
pub const FLAGS: &[(&str, Takes)] = &[
    ("allow_other", Takes::Nothing),
    ("ca_bundle", Takes::Value),
    ("cache_dir", Takes::Value),
    ("compress", Takes::Value),
    ("compress_threshold", Takes::Value),
    ("direct_io", Takes::Nothing),
    ("endpoint_url", Takes::Value),
    ("expiry_warning", Takes::Value),
    ("fuse_request_size", Takes::Value),
    ("gid", Takes::Value),
    ("listing_heads", Takes::Value),
    ("local", Takes::Value),
    ("log_level", Takes::Value),
    ("max_cache_size", Takes::Value),
    ("max_pending", Takes::Value),
    ("max_read_memory", Takes::Value),
    ("max_read_window", Takes::Value),
    ("metadata_ttl", Takes::Value),
    ("metrics_addr", Takes::Value),
    ("no_passthrough", Takes::Nothing),
    ("no_etag_check", Takes::Nothing),
    ("prefix", Takes::Value),
    ("read_only", Takes::Nothing),
    ("read_part_size", Takes::Value),
    ("region", Takes::Value),
    ("request_timeout", Takes::Value),
    ("retention_days", Takes::Value),
    ("share_link_ttl", Takes::Value),
    ("uid", Takes::Value),
    ("upload_concurrency", Takes::Value),
    ("upload_part_size", Takes::Value),
    ("verify_first", Takes::Nothing),
    ("work", Takes::Value),
    ("write_back", Takes::Nothing),
];

/// Long flags of `rgrid-mount` that have no option, and why (checked against its
/// command line by a test of the main crate).
pub const NOT_OPTIONS: &[&str] = &["bucket", "foreground", "help", "version"];

/// Options for mount(8), systemd or the kernel's generic mount flags: accepted, and
/// dropped. `x-*` and `comment=*` are dropped too.
const MOUNT_ONLY: &[&str] = &[
    "_netdev",
    "nofail",
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "defaults",
    "rw",
    "nodev",
    "nosuid",
    "exec",
    "noexec",
    "dev",
    "suid",
    "atime",
    "noatime",
    "relatime",
    "nodiratime",
    "async",
    "loud",
    "silent",
];

/// Option names that would carry a secret.
const SECRETS: &[&str] = &[
    "access_key",
    "secret_key",
    "access_key_id",
    "secret_access_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "session_token",
    "password",
    "passwd",
];

/// What the helper runs: `rgrid-mount` with these arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// `credentials_file=`: the shared credentials file the AWS chain reads.
    pub credentials_file: Option<PathBuf>,
    /// `profile=`: the profile the AWS chain uses.
    pub profile: Option<String>,
}

/// A bad source or option: one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// An option this helper does not know.
    Unknown(String),
    /// An option that needs `=VALUE`.
    NeedsValue(String),
    /// A switch given a value.
    TakesNoValue(String),
    /// A secret on the command line.
    Secret(String),
    /// An option given twice, or set by the source field too.
    Repeated(String),
    /// A source that is not `BUCKET` or `BUCKET/PREFIX`.
    Source(String),
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Unknown(o) => write!(f, "unknown option `{o}` (see rgrid-mount --help; `-` is spelled `_`)"),
            OptionError::NeedsValue(o) => write!(f, "option `{o}` needs a value: {o}=VALUE"),
            OptionError::TakesNoValue(o) => write!(f, "option `{o}` takes no value"),
            OptionError::Secret(o) => write!(f, "option `{o}` would put a secret on the command line: use credentials_file=PATH (mode 0600) or profile=NAME"),
            OptionError::Repeated(o) => write!(f, "option `{o}` is given twice"),
            OptionError::Source(s) => write!(f, "source `{s}` is not BUCKET or BUCKET/PREFIX"),
        }
    }
}

impl std::error::Error for OptionError {}

/// Splits an `-o` string at commas. A value may hold commas inside double quotes, as
/// libmount writes them (`endpoint_url="a,b"`), or escaped (`\,`); `\\` is a backslash.
pub fn split_options(text: &str) -> Vec<String> {
    let mut options = vec![String::new()];
    let mut chars = text.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        let current = options.last_mut().expect("never empty");
        match c {
            '\\' => current.extend(chars.next()),
            '"' => quoted = !quoted,
            ',' if !quoted => options.push(String::new()),
            c => current.push(c),
        }
    }
    options.retain(|o| !o.is_empty());
    options
}

/// Joins options into one `-o` string, escaping what [`split_options`] splits on or
/// strips.
pub fn join_options(options: &[String]) -> String {
    let escaped: Vec<String> = options
        .iter()
        .map(|o| {
            o.replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace('"', "\\\"")
        })
        .collect();
    escaped.join(",")
}

/// The `rgrid-mount` invocation that mounts `source` on `mountpoint` with `options`.
pub fn translate(
    source: &str,
    mountpoint: &Path,
    options: &[String],
) -> Result<Invocation, OptionError> {
    let mut out = Invocation::default();
    let (bucket, prefix) = parse_source(source)?;
    out.args.push("--bucket".into());
    out.args.push(bucket.into());
    let mut seen: Vec<String> = Vec::new();
    if let Some(prefix) = prefix {
        out.args.push(format!("--prefix={prefix}").into());
        seen.push("prefix".into());
    }
    for option in options {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (option.as_str(), None),
        };
        let name = if name == "ro" { "read_only" } else { name };
        if dropped(name) {
            continue;
        }
        if seen.iter().any(|s| s == name) {
            return Err(OptionError::Repeated(name.to_owned()));
        }
        seen.push(name.to_owned());
        translate_one(&mut out, name, value)?;
    }
    out.args.push(mountpoint.as_os_str().to_owned());
    Ok(out)
}

fn translate_one(out: &mut Invocation, name: &str, value: Option<&str>) -> Result<(), OptionError> {
    let needs = || value.ok_or_else(|| OptionError::NeedsValue(name.to_owned()));
    match name {
        "credentials_file" => out.credentials_file = Some(needs()?.into()),
        // user:password@host would show in ps and the mount table like any secret.
        "endpoint_url" if needs()?.split('/').nth(2).is_some_and(|a| a.contains('@')) => {
            return Err(OptionError::Secret(name.to_owned()))
        }
        "profile" => out.profile = Some(needs()?.to_owned()),
        _ if SECRETS.contains(&name) => return Err(OptionError::Secret(name.to_owned())),
        _ => {
            let takes = FLAGS
                .iter()
                .find(|(flag, _)| *flag == name)
                .map(|(_, takes)| *takes)
                .ok_or_else(|| OptionError::Unknown(name.to_owned()))?;
            let flag = format!("--{}", name.replace('_', "-"));
            match (takes, value) {
                (Takes::Nothing, None) => out.args.push(flag.into()),
                (Takes::Nothing, Some(_)) => {
                    return Err(OptionError::TakesNoValue(name.to_owned()))
                }
                (Takes::Value, None) => return Err(OptionError::NeedsValue(name.to_owned())),
                (Takes::Value, Some(v)) => out.args.push(format!("{flag}={v}").into()),
            }
        }
    }
    Ok(())
}

/// Whether `name` is for mount(8) or systemd, not for us.
fn dropped(name: &str) -> bool {
    MOUNT_ONLY.contains(&name) || name.starts_with("x-") || name == "comment"
}

/// `BUCKET` or `BUCKET/PREFIX` (the prefix without its trailing `/`).
fn parse_source(source: &str) -> Result<(&str, Option<&str>), OptionError> {
    let bad = || OptionError::Source(source.to_owned());
    let (bucket, prefix) = match source.split_once('/') {
        Some((bucket, prefix)) => (bucket, Some(prefix.trim_end_matches('/'))),
        None => (source, None),
    };
    // S3's bucket names: 3 to 63 of lowercase letters, digits, dots and hyphens.
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !valid {
        return Err(bad());
    }
    match prefix {
        Some("") => Ok((bucket, None)),
        prefix => Ok((bucket, prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(inv: &Invocation) -> Vec<String> {
        inv.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn an_fstab_line_becomes_flags() {
        let options = split_options(
            "_netdev,nofail,endpoint_url=http://minio:9000,allow_other,uid=1000,ro,x-systemd.automount,comment=a",
        );
        let inv = translate(
            "rgrid-executions/executions/e1",
            Path::new("/mnt/r"),
            &options,
        );
        assert_eq!(
            args(&inv.unwrap()),
            [
                "--bucket",
                "rgrid-executions",
                "--prefix=executions/e1",
                "--endpoint-url=http://minio:9000",
                "--allow-other",
                "--uid=1000",
                "--read-only",
                "/mnt/r"
            ]
        );
    }

    #[test]
    fn bad_options_are_named() {
        let mnt = Path::new("/mnt");
        let t = |o: &str| translate("bucket", mnt, &split_options(o)).unwrap_err();
        assert_eq!(t("bogus"), OptionError::Unknown("bogus".into()));
        assert_eq!(t("uid"), OptionError::NeedsValue("uid".into()));
        assert_eq!(
            t("allow_other=1"),
            OptionError::TakesNoValue("allow_other".into())
        );
        assert_eq!(
            t("secret_key=s3cr3t"),
            OptionError::Secret("secret_key".into())
        );
        assert_eq!(t("uid=1,uid=2"), OptionError::Repeated("uid".into()));
        assert_eq!(t("bucket=other"), OptionError::Unknown("bucket".into()));
        let source = translate("Not_A_Bucket", mnt, &[]).unwrap_err();
        assert_eq!(source, OptionError::Source("Not_A_Bucket".into()));
        let both = translate("bucket/p", mnt, &split_options("prefix=q")).unwrap_err();
        assert_eq!(both, OptionError::Repeated("prefix".into()));
    }

    #[test]
    fn quoted_values_keep_their_commas() {
        let options = split_options(r#"endpoint_url="http://a,b",prefix="x",ro"#);
        assert_eq!(options, ["endpoint_url=http://a,b", "prefix=x", "ro"]);
    }

    #[test]
    fn credentials_come_from_a_file_or_a_profile_not_the_command_line() {
        let options = split_options("credentials_file=/etc/rgrid/creds,profile=runner");
        let inv = translate("bucket", Path::new("/m"), &options).unwrap();
        assert_eq!(
            inv.credentials_file,
            Some(PathBuf::from("/etc/rgrid/creds"))
        );
        assert_eq!(inv.profile.as_deref(), Some("runner"));
        assert_eq!(args(&inv), ["--bucket", "bucket", "/m"]);
    }

    /// A value for a flag: anything printable, commas and backslashes included.
    fn value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9/:.,\"\\\\ =_-]{1,12}"
    }

    /// A set of distinct flags, each with a value if it takes one.
    fn flag_set() -> impl Strategy<Value = Vec<(&'static str, Option<String>)>> {
        proptest::sample::subsequence(FLAGS.to_vec(), 0..FLAGS.len())
            .prop_flat_map(|flags| {
                let values: Vec<_> = flags
                    .iter()
                    .map(|(_, takes)| match takes {
                        Takes::Nothing => Just(None).boxed(),
                        Takes::Value => value().prop_map(Some).boxed(),
                    })
                    .collect();
                (Just(flags), values)
            })
            .prop_map(|(flags, values)| flags.iter().map(|(name, _)| *name).zip(values).collect())
            .prop_shuffle()
    }

    proptest! {
        /// Flags written as one `-o` string, with mount-only words among them, come back
        /// as exactly the flags, in order.
        #[test]
        fn flags_to_options_and_back(flags in flag_set(), noise in proptest::sample::subsequence(MOUNT_ONLY.to_vec(), 0..4)) {
            let mut options: Vec<String> = noise.iter().map(|w| w.to_string()).collect();
            let mut expected = vec!["--bucket".to_string(), "bucket".into()];
            for (name, value) in &flags {
                let flag = format!("--{}", name.replace('_', "-"));
                match value {
                    Some(v) => {
                        options.push(format!("{name}={v}"));
                        expected.push(format!("{flag}={v}"));
                    }
                    None => {
                        options.push(name.to_string());
                        expected.push(flag);
                    }
                }
            }
            expected.push("/mnt".into());
            let text = join_options(&options);
            let inv = translate("bucket", Path::new("/mnt"), &split_options(&text)).unwrap();
            prop_assert_eq!(args(&inv), expected);
        }
    }
}
