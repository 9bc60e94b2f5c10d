//! Logging: tracing-subscriber to stderr, filtered by RUST_LOG when set, else `--log-level`.
//! Under systemd (`JOURNAL_STREAM` names the journal as stderr) lines carry no colour and
//! no timestamp: the journal stamps each line itself.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(format!("warn,rgrid_mount={level}"))
            .map_err(|e| anyhow::anyhow!("--log-level {level:?}: {e}"))?,
    };
    use std::io::IsTerminal;
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colours only for a person at a terminal: the journal and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !journal);
    if journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
    Ok(())
}
