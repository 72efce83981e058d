//! Command-line syntax.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Fast, deduplicated, encrypted backups for machines you run yourself.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a directory (default: $XDG_DATA_HOME/cairn/repo).
    #[arg(long, short = 'r', env = "CAIRN_REPO", global = true)]
    pub repo: Option<String>,
    /// Read the passphrase from this file (else $CAIRN_PASSWORD, else a prompt).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Open the repository with this key file (e.g. a put-only key).
    #[arg(long, env = "CAIRN_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Never show a progress bar.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository and its owner key.
    Init,
    /// Back up paths into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List files in a snapshot.
    Ls(LsArgs),
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Restore a snapshot, or part of one, into a directory.
    Restore(RestoreArgs),
    /// Verify the repository's structure (and data with --read-data).
    Check(CheckArgs),
    /// Manage keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show repository and snapshot sizes.
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Skip paths matching this gitignore-style pattern (repeatable).
    #[arg(long, short = 'e')]
    pub exclude: Vec<String>,
    /// Read exclude patterns from a file, one per line.
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Skip the contents of directories holding a valid CACHEDIR.TAG.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Stay on the filesystem of each source path.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Group of the snapshot (default: HOST:PATHS).
    #[arg(long)]
    pub group: Option<String>,
    /// Read and chunk everything, write nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Pack size target, e.g. 32MiB.
    #[arg(long, value_parser = parse_size)]
    pub pack_size: Option<u64>,
    /// Ignore the files cache (read every file).
    #[arg(long)]
    pub no_cache: bool,
    /// zstd level for new data: 1 (fastest) to 19 (smallest), 0 = none.
    #[arg(long, default_value_t = cairn_repo::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub compression: i32,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// SNAP or SNAP:PATH (SNAP is `latest` or an ID prefix).
    pub snapshot: String,
    /// Pick `latest` within this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Show type, mode, owner, size and time.
    #[arg(long, short = 'l')]
    pub long: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Older snapshot.
    pub a: String,
    /// Newer snapshot.
    pub b: String,
    /// Pick `latest` within this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// SNAP or SNAP:PATH (the contents of PATH land in DEST).
    pub snapshot: String,
    /// Target directory; the snapshot's absolute paths are recreated under it.
    pub target: PathBuf,
    /// Only restore paths matching this pattern (repeatable).
    #[arg(long, short = 'i')]
    pub include: Vec<String>,
    /// Do not restore paths matching this pattern (repeatable).
    #[arg(long, short = 'e')]
    pub exclude: Vec<String>,
    /// Pick `latest` within this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read and authenticate every blob.
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum RoleArg {
    /// Reads and writes everything.
    Owner,
    /// Can add snapshots; cannot read, list or restore anything stored.
    PutOnly,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a key. An owner key is stored in the repository under a new
    /// passphrase; a put-only key is written to --output for a source.
    Add {
        /// What the key may do.
        #[arg(long, value_enum, default_value = "owner")]
        role: RoleArg,
        /// Write the key to this file instead of the repository.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Read the new key's passphrase from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// Leave the written key file without passphrase (mode 0600).
        #[arg(long)]
        no_password: bool,
        /// Label, e.g. who holds the key.
        #[arg(long)]
        label: Option<String>,
    },
    /// List the keys stored in the repository.
    List,
    /// Remove a key stored in the repository.
    Remove {
        /// Key ID (prefix) from `cairn key list`.
        id: String,
    },
    /// Change the passphrase of the key in use.
    Passwd {
        /// Read the new passphrase from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Write the key in use to a file, to keep a copy somewhere safe.
    Export {
        /// Destination file (mode 0600); must not exist.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Protect the exported key with a passphrase from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
}

/// Parses `32MiB`, `4M`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 32MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?}; use KiB, MiB or GiB")),
    };
    Ok(n * mult)
}
