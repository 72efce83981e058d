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
    /// Remove snapshots by a retention policy (or by ID). Needs no key.
    Forget(ForgetArgs),
    /// Collect data no snapshot needs, in two phases. Needs no key.
    Prune(PruneArgs),
    /// Keep snapshots out of every retention policy.
    Protect(ProtectArgs),
    /// Let retention policies reach protected snapshots again.
    Unprotect(ProtectArgs),
    /// Repair a damaged repository.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Serve the repository at --repo over stdin and stdout with a role:
    /// the forced command of an SSH key in `authorized_keys`.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Speak the storage protocol on stdin and stdout (the only mode so far).
    #[arg(long, required = true)]
    pub stdio: bool,
    /// What the client may do.
    #[arg(long, value_enum)]
    pub role: ServeRole,
    /// With --role put: only snapshots of groups matching this (`*` any run).
    #[arg(long)]
    pub group: Option<String>,
    /// Name logged with every refusal (default: the SSH client's address).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ServeRole {
    /// Everything, maintenance included.
    Admin,
    /// Add backups; never delete, overwrite or read stored contents.
    Put,
    /// Restore and verify; write nothing.
    Read,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' trailers (needs no key).
    Index,
    /// Write new snapshots that leave out damaged files (owner key); the
    /// originals stay until forgotten.
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Args, Debug)]
pub struct RepairSnapshotsArgs {
    /// Only these snapshots (default: every snapshot that needs damaged data).
    pub snapshots: Vec<String>,
    /// Show what would be repaired; write nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove by ID prefix, instead of a policy.
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots of each group.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Likewise for days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Likewise for ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Likewise for months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Likewise for years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than this, counted from now (e.g. 30d, 12h, 1y).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Apply the policy to this group only (repeatable; default: every group).
    #[arg(long)]
    pub group: Vec<String>,
    /// Allow the policy to remove every snapshot of a group.
    #[arg(long)]
    pub allow_empty: bool,
    /// Show what would be removed, and why the rest is kept; remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run a prune afterwards.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneOpts,
}

#[derive(Args, Debug, Clone)]
pub struct PruneOpts {
    /// Repack packs whose unused share is above this (e.g. 10%).
    #[arg(long, default_value = "10%", value_parser = parse_share)]
    pub max_unused: f64,
    /// How long unused packs wait before deletion; longer than any backup
    /// runs (e.g. 6h, 30min, 0 when no backup can be running).
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    pub grace: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Report what would be condemned, repacked and deleted; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub opts: PruneOpts,
}

#[derive(Args, Debug)]
pub struct ProtectArgs {
    /// Snapshots (ID prefix or `latest`).
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    /// Pick `latest` within this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Why (shown by `cairn snapshots`).
    #[arg(long, default_value = "")]
    pub note: String,
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
    /// Back up even though the last snapshot this machine wrote for the
    /// group is gone (forgotten on purpose, not a rolled-back storage).
    #[arg(long)]
    pub accept_rollback: bool,
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
    /// Also decrypt and authenticate every blob (owner key).
    #[arg(long)]
    pub read_data: bool,
    /// Like --read-data, for a deterministic part of the packs: `3/10`
    /// (run 1/10 to 10/10 to cover everything once) or `5%`.
    #[arg(long, value_name = "SUBSET", value_parser = cairn_maint::verify::Subset::parse)]
    pub read_data_subset: Option<cairn_maint::verify::Subset>,
    /// Skip reading packs to compare them with their names: check only
    /// what the index, trailers and record headers say.
    #[arg(long, conflicts_with_all = ["read_data", "read_data_subset"])]
    pub structure_only: bool,
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

/// Parses `90s`, `30min`, `12h`, `7d`, `2w`, `6mo`, `1y`, and sums like
/// `1d12h`. A bare `m` is refused: restic reads it as months, others as
/// minutes.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return Err("empty duration; use e.g. 30d, 12h or 90min".into());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let ulen = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(ulen);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30d, 12h or 90min"))?;
        let secs = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "mo" => 30 * 86_400,
            "y" => 365 * 86_400,
            "m" => {
                return Err(format!("{s:?}: write `min` for minutes or `mo` for months"));
            }
            u => {
                return Err(format!(
                    "{s:?}: unknown unit {u:?}; use s, min, h, d, w, mo or y"
                ));
            }
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = next;
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Parses `10%`, `0.1`, `5 %`.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a share like 10%"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} must be between 0% and 100%"));
    }
    Ok(v)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_and_shares() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("30min"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1y"), Ok(Duration::from_secs(365 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5m").unwrap_err().contains("`min`"));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("d").is_err());
        assert_eq!(parse_share("10%"), Ok(0.1));
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("150%").is_err());
    }
}
