//! End-to-end tests: they run the real `cairn` binary against real
//! directories. One test binary; modules by theme.

#[path = "e2e/util.rs"]
mod util;

#[path = "e2e/roundtrip.rs"]
mod roundtrip;

#[path = "e2e/fidelity.rs"]
mod fidelity;

#[path = "e2e/features.rs"]
mod features;

#[path = "e2e/safety.rs"]
mod safety;

#[path = "e2e/fixture.rs"]
mod fixture;

#[path = "e2e/maint.rs"]
mod maint;

#[path = "e2e/ssh.rs"]
mod ssh;

#[path = "e2e/https.rs"]
mod https;

#[path = "e2e/hardening.rs"]
mod hardening;

#[path = "e2e/powercut.rs"]
mod powercut;

#[path = "e2e/stream.rs"]
mod stream;

#[path = "e2e/daemon.rs"]
mod daemon;

#[path = "e2e/pull.rs"]
mod pull;

#[path = "e2e/dist.rs"]
mod dist;

#[path = "e2e/s3.rs"]
mod s3;

#[path = "e2e/copy.rs"]
mod copy;

#[path = "e2e/git.rs"]
mod git;

// The read-only FUSE view of every snapshot.
#[path = "e2e/mount.rs"]
mod mount;

// `cairn dump`: files and tar streams.
#[path = "e2e/dump.rs"]
mod dump;

// Restoring over what is already there, and resuming.
#[path = "e2e/restore_options.rs"]
mod restore_options;

// This machine's system restored onto a new disk and checked from inside.
#[path = "e2e/whole_machine.rs"]
mod whole_machine;
