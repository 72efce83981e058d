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
    /// Repository: a directory (default: $XDG_DATA_HOME/cairn/repo),
    /// https://box:8443/NAME, ssh://[user@]host[:port]/path, or
    /// s3://BUCKET/PREFIX (credentials, region and endpoint from the AWS_*
    /// variables or ~/.aws).
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
    /// For https:// repositories: read the token from this file (else $CAIRN_TOKEN).
    #[arg(long, env = "CAIRN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// For https:// repositories: trust only the certificate with this
    /// SHA-256 fingerprint (else: one a public authority signed, or the
    /// one remembered on first contact).
    #[arg(long, env = "CAIRN_SERVER_FINGERPRINT", global = true)]
    pub server_fingerprint: Option<String>,
    /// For ssh:// repositories: the cairn program on the remote machine
    /// (a forced command in its `authorized_keys` overrides it).
    #[arg(
        long,
        env = "CAIRN_REMOTE_CAIRN",
        default_value = "cairn",
        global = true
    )]
    pub remote_cairn: String,
    /// How long to keep retrying an unreachable server before giving up.
    #[arg(long, env = "CAIRN_RETRY_FOR", default_value = "2min", value_parser = parse_duration, global = true)]
    pub retry_for: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository and its owner key (or, with --like, a replica
    /// of another repository for `cairn copy`).
    Init(InitArgs),
    /// Back up paths, or a stream on stdin, into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List files in a snapshot.
    Ls(LsArgs),
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Restore a snapshot, or part of one, into a directory.
    Restore(RestoreArgs),
    /// Write a file of a snapshot to stdout, or a directory as a tar stream.
    Dump(DumpArgs),
    /// Browse every snapshot as a read-only filesystem (FUSE) until
    /// Ctrl-C or `umount`.
    Mount(MountArgs),
    /// Verify the repository's structure (and data with --read-data).
    Check(CheckArgs),
    /// Manage keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show repository and snapshot sizes.
    Stats(StatsArgs),
    /// Remove snapshots by a retention policy (or by ID). Needs no key.
    Forget(ForgetArgs),
    /// Copy snapshots to another repository: the off-site copy. Only what
    /// it lacks is sent; a killed copy resumes. Needs no key for a
    /// replica (`init --like`).
    Copy(CopyArgs),
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
    /// Run the backup box over HTTPS, or manage its tokens.
    Server(ServerArgs),
    /// Run the jobs of cairn.toml on their schedules: backups, pulls,
    /// command dumps, maintenance and restore drills.
    Daemon(DaemonArgs),
    /// Run one job of cairn.toml now, in the foreground, with its guards.
    Run(JobArgs),
    /// Show each job's health; exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Status(ConfigArg),
    /// Let the next run of a job commit although it lost more than
    /// max_vanished of the last snapshot.
    Approve(JobArgs),
    /// On a machine a box pulls from: run the backup the box asks for
    /// over this SSH connection (the forced command of the box's key in
    /// `authorized_keys`). Needs --key-file, the machine's put-only key.
    PullAgent(PullAgentArgs),
    /// Mirror every repository of a GitHub, GitLab, Gitea or Forgejo
    /// owner without losing what upstream rewrites or deletes, and
    /// restore a mirror from a snapshot.
    #[command(subcommand)]
    Git(GitCommand),
}

#[derive(Subcommand, Debug)]
pub enum GitCommand {
    /// Bring the mirrors of a forge owner up to date, keeping the old tip
    /// of every ref upstream rewrote or deleted, then snapshot them into
    /// the repository (group git:FORGE/OWNER).
    Mirror(GitMirrorArgs),
    /// Restore one mirror from a snapshot as a bare repository that `git
    /// clone` accepts, preserved refs included.
    Restore(GitRestoreArgs),
}

#[derive(Args, Debug)]
pub struct GitMirrorArgs {
    /// github, gitlab, gitea or forgejo.
    #[arg(long, value_parser = ["github", "gitlab", "gitea", "forgejo"])]
    pub forge: String,
    /// User, organisation or GitLab group (with its subgroups).
    #[arg(long)]
    pub owner: String,
    /// The forge's web address, for a self-hosted one (default: the
    /// public instance).
    #[arg(long)]
    pub base_url: Option<String>,
    /// A file holding the API token (private repositories; without one,
    /// public repositories only and a low rate limit).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Mirror only names matching this pattern (`*` matches any run of
    /// characters; repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out names matching this pattern (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Mirror forks too.
    #[arg(long)]
    pub forks: bool,
    /// Leave out archived repositories.
    #[arg(long)]
    pub no_archived: bool,
    /// Leave out wikis.
    #[arg(long)]
    pub no_wikis: bool,
    /// Leave out Git LFS objects (fetched when git-lfs is installed).
    #[arg(long)]
    pub no_lfs: bool,
    /// Mirror the heads of pull and merge requests too (refs/pull/N/head,
    /// refs/merge-requests/N/head).
    #[arg(long)]
    pub pull_requests: bool,
    /// Fetch over SSH (your ssh keys and config) rather than HTTPS with the
    /// token.
    #[arg(long)]
    pub ssh: bool,
    /// Fetches at once.
    #[arg(long, default_value_t = cairn_daemon::git::DEFAULT_FETCHES, value_parser = clap::value_parser!(usize))]
    pub fetches: usize,
    /// Where the mirrors live (default:
    /// $XDG_STATE_HOME/cairn/git/FORGE-OWNER).
    #[arg(long)]
    pub mirrors: Option<PathBuf>,
    /// Only mirror; write no snapshot.
    #[arg(long)]
    pub no_snapshot: bool,
    /// Snapshot group (default git:FORGE/OWNER).
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct GitRestoreArgs {
    /// The snapshot (ID, prefix, or `latest` with --group).
    pub snapshot: String,
    /// The repository: its name, a former name, or the forge's ID.
    pub name: String,
    /// New directory for the bare repository.
    pub dest: PathBuf,
    /// Pick `latest` within this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Then push every ref (`git push --mirror`) to this fresh remote.
    #[arg(long)]
    pub push: Option<String>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Make a replica of this repository: the same config and keys, so
    /// that `cairn copy` sends records as they are, never decrypted
    /// (a directory, https://, ssh:// or s3:// location).
    #[arg(long, value_name = "REPO")]
    pub like: Option<String>,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The repository to copy from (default: --repo).
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
    /// The repository to copy to: a replica made with `init --like`.
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// Only snapshots of groups matching this (`*` matches any run).
    #[arg(long)]
    pub group: Option<String>,
    /// Say what would be sent; send nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Copy into a repository of another owner: every blob is read with
    /// the source's owner key and sealed to the destination's owner.
    /// Writing needs only a destination key that may add (a put-only one).
    #[arg(long)]
    pub reencrypt: bool,
    /// With --reencrypt: the destination's key file (e.g. its put-only
    /// key).
    #[arg(long, value_name = "FILE")]
    pub to_key_file: Option<PathBuf>,
    /// With --reencrypt: read the destination's passphrase from this file.
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// The destination box's token (default: --token-file, which then
    /// serves the source alone when both are boxes).
    #[arg(long, value_name = "FILE")]
    pub to_token_file: Option<PathBuf>,
    /// Snapshots to copy (ID prefixes or `latest`); default: all.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PullAgentArgs {
    /// Only back up paths below this directory (repeatable; default:
    /// any path the box asks for).
    #[arg(long, value_name = "DIR")]
    pub allow: Vec<PathBuf>,
}

/// Where the daemon's config is.
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// The config file (default: /etc/cairn/cairn.toml as root, else
    /// $XDG_CONFIG_HOME/cairn/cairn.toml).
    #[arg(long, short = 'c', env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub cfg: ConfigArg,
    /// Check the config file, name every mistake with its line and
    /// column, and exit.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job's name in the config.
    pub job: String,
    #[command(flatten)]
    pub cfg: ConfigArg,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    #[command(flatten)]
    pub where_: ServerConfigArgs,
}

/// Where the server's configuration comes from: a file, or flags.
#[derive(Args, Debug, Clone)]
pub struct ServerConfigArgs {
    /// The config file (see docs/server.md); the flags below are for a
    /// quick start without one.
    #[arg(long, short = 'c', env = "CAIRN_SERVER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for tokens, the certificate and job state (flag form).
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    /// Address to listen on (flag form; default 0.0.0.0:8443).
    #[arg(long)]
    pub listen: Option<String>,
    /// A repository to serve, as NAME=PATH; repeat for more (flag form).
    #[arg(long, value_name = "NAME=PATH")]
    pub serve: Vec<String>,
    /// Serve plain HTTP: loopback addresses only, e.g. behind a proxy.
    #[arg(long)]
    pub plain_http: bool,
    /// Certificate chain (PEM) instead of a self-signed one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the fingerprint of the server's certificate, for clients to pin.
    Fingerprint,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token for the repository named by --repo and print it (once).
    Add {
        /// Its name, logged with everything it does (e.g. the machine's name).
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: ServeRole,
        /// With --role put: only snapshots of groups matching this (`*` any run).
        #[arg(long)]
        group: Option<String>,
        /// Stop working after this long (e.g. 90d); default never.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name; a running server refuses it at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Speak the storage protocol on stdin and stdout (for HTTPS, see `cairn server`).
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
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    pub paths: Vec<PathBuf>,
    /// Back up what is piped in on stdin as one file of the snapshot, e.g.
    /// `pg_dump shop | cairn backup --stdin --stdin-filename shop.sql`.
    #[arg(long)]
    pub stdin: bool,
    /// Name of the file the stdin stream is stored as (default: stdin);
    /// the default group is then HOST:stdin:NAME.
    // `requires` alone lets `--stdin-filename N PATH` through: clap waives
    // a requirement that conflicts with an argument given (PATH).
    #[arg(
        long,
        value_name = "NAME",
        requires = "stdin",
        conflicts_with = "paths"
    )]
    pub stdin_filename: Option<String>,
    /// Skip paths matching this gitignore-style pattern (repeatable).
    #[arg(long, short = 'e', conflicts_with = "stdin")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from a file, one per line.
    #[arg(long, conflicts_with = "stdin")]
    pub exclude_file: Vec<PathBuf>,
    /// Skip the contents of directories holding a valid CACHEDIR.TAG.
    #[arg(long, conflicts_with = "stdin")]
    pub exclude_caches: bool,
    /// Stay on the filesystem of each source path.
    #[arg(long, short = 'x', conflicts_with = "stdin")]
    pub one_file_system: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Group of the snapshot (default: HOST:PATHS, or HOST:stdin:NAME).
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
    /// What to do with what is already in DEST: `if-changed` keeps files
    /// whose size and ns mtime are the snapshot's (so a restore run again
    /// resumes), `always` rewrites everything, `never` leaves whatever
    /// exists, directories' metadata included.
    #[arg(long, value_enum, default_value = "if-changed")]
    pub overwrite: OverwriteArg,
    /// Remove what DEST holds that the snapshot does not, so DEST ends
    /// equal to it.
    #[arg(long, conflicts_with_all = ["include", "exclude"])]
    pub delete: bool,
    /// Read every restored file back and check it against the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// Worker threads (default: two per core, at most eight more than cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum OverwriteArg {
    /// Rewrite every file.
    Always,
    /// Keep files whose size and modification time match the snapshot.
    IfChanged,
    /// Leave anything that exists.
    Never,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// SNAP:PATH (a file's bytes, or a directory as tar), or SNAP for
    /// the whole snapshot as tar.
    pub snapshot: String,
    /// Write here instead of to stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// A tar stream even for a single file (keeps its metadata).
    #[arg(long)]
    pub tar: bool,
    /// Pick `latest` within this group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Only snapshots of groups matching this pattern (`laptop:*`).
    #[arg(long)]
    pub group: Option<String>,
    /// Memory for decoded file contents (`64MiB`, `1GiB`).
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// Also keep file contents read in this directory, still encrypted,
    /// for later reads and mounts (worth it for a box or S3).
    #[arg(long, value_name = "DIR")]
    pub disk_cache: Option<PathBuf>,
    /// Bytes the disk cache may hold.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, requires = "disk_cache")]
    pub disk_cache_size: u64,
    /// Let other users in (their access is checked against the stored
    /// owners and modes); needs `user_allow_other` in /etc/fuse.conf
    /// unless mounting as root.
    #[arg(long)]
    pub allow_other: bool,
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
        /// Remove even the last owner key stored in the repository, so
        /// that only owner key files outside it (such as the one in use)
        /// open it.
        #[arg(long)]
        force: bool,
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

pub use cairn_maint::duration::parse as parse_duration;

pub use cairn_maint::units::{share as parse_share, size as parse_size};

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
    }
}
