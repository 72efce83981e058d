//! Which role may do what, on which kind of object.
//!
//! - `admin` may do everything.
//! - `put` adds backups: it writes new packs, index files and snapshots of
//!   its own groups, and reads only what deduplication and a safe commit
//!   need (the config, index files, garbage records, the pack listing,
//!   its own groups' snapshots, and the plaintext tail of a pack). It never
//!   deletes or replaces anything, never reads pack contents, key files,
//!   or other groups' snapshots,
//!   and never takes part in maintenance (leases, protection marks).
//! - `read` restores and verifies: it reads everything and writes nothing.

use cairn_storage::Kind;

/// What a caller is allowed to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything, maintenance included.
    Admin,
    /// Add backups of the groups matching the pattern (all groups: `None`).
    Put(Option<GroupPattern>),
    /// Read and verify, write nothing.
    Read,
}

impl Role {
    /// Its name in tokens, logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Put(_) => "put",
            Role::Read => "read",
        }
    }
}

/// A storage operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a whole object.
    Get,
    /// Read part of an object.
    GetRange,
    /// Size of an object.
    Size,
    /// Create an object.
    Put,
    /// List a kind.
    List,
    /// Delete an object.
    Delete,
}

/// The verdict on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Go ahead only for snapshots of the caller's groups: the guard
    /// reads the envelope (or filters the listing) to decide.
    OwnGroups,
    /// Refused, with the reason for the caller and the log.
    Deny(String),
}

/// Decides a request by role, operation and kind.
pub fn decide(role: &Role, op: Op, kind: Kind) -> Decision {
    use Decision::{Allow, Deny, OwnGroups};
    use Kind::*;
    use Op::*;
    let deny = |why: &str| Deny(format!("a {} token cannot {why}", role.name()));
    match role {
        Role::Admin => Allow,
        Role::Read => match op {
            Get | GetRange | Size | List => Allow,
            Put => deny("write anything"),
            Delete => deny("delete anything"),
        },
        Role::Put(_) => match (op, kind) {
            (Delete, _) => deny("delete anything"),
            (Get | Size, Config) => Allow,
            (_, Config) => deny("change the config"),
            (_, Key) => deny("read or write key files"),
            (Put | List | Size, Pack) => Allow,
            (Get | GetRange, Pack) => deny("read pack contents"),
            (Put | Get | GetRange | Size | List, Index) => Allow,
            (Put | Get | GetRange | Size | List, Snapshot) => OwnGroups,
            (Get | GetRange | Size | List, Garbage) => Allow,
            (Put, Garbage) => deny("condemn data (prune is for admin tokens)"),
            (_, Lock) => deny("take part in maintenance (leases)"),
            (_, Protect) => deny("touch protection marks"),
            (_, Receipt) => deny("read or write receipts (the server writes them)"),
            // Listed as empty (see the guard): a source's listing of
            // packs is scoped already.
            (List, Origin) => Allow,
            (_, Origin) => deny("read or write origin marks (the server writes them)"),
        },
    }
}

/// A group pattern: `*` matches any run of characters, everything else
/// itself (e.g. `laptop:*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPattern(String);

impl GroupPattern {
    /// A pattern; refuses an empty one.
    pub fn new(p: &str) -> Result<GroupPattern, String> {
        if p.is_empty() {
            return Err("a group pattern cannot be empty; use * for every group".into());
        }
        Ok(GroupPattern(p.to_string()))
    }

    /// Whether `group` matches.
    pub fn matches(&self, group: &str) -> bool {
        cairn_store::snapshots::group_matches(&self.0, group)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Kind; 10] = [
        Kind::Origin,
        Kind::Receipt,
        Kind::Config,
        Kind::Key,
        Kind::Pack,
        Kind::Index,
        Kind::Snapshot,
        Kind::Lock,
        Kind::Garbage,
        Kind::Protect,
    ];
    const OPS: [Op; 6] = [
        Op::Get,
        Op::GetRange,
        Op::Size,
        Op::Put,
        Op::List,
        Op::Delete,
    ];

    #[test]
    fn put_never_deletes_or_reads_contents_or_keys() {
        let put = Role::Put(None);
        for k in KINDS {
            assert!(
                matches!(decide(&put, Op::Delete, k), Decision::Deny(_)),
                "{k:?}"
            );
        }
        for op in [Op::Get, Op::GetRange] {
            assert!(matches!(decide(&put, op, Kind::Pack), Decision::Deny(_)));
        }
        for op in OPS {
            assert!(
                matches!(decide(&put, op, Kind::Key), Decision::Deny(_)),
                "{op:?}"
            );
            assert!(
                matches!(decide(&put, op, Kind::Lock), Decision::Deny(_)),
                "{op:?}"
            );
        }
        assert_eq!(decide(&put, Op::Put, Kind::Pack), Decision::Allow);
        assert_eq!(decide(&put, Op::Get, Kind::Index), Decision::Allow);
        assert_eq!(decide(&put, Op::List, Kind::Snapshot), Decision::OwnGroups);
        assert_eq!(decide(&put, Op::Get, Kind::Garbage), Decision::Allow);
        assert!(matches!(
            decide(&put, Op::Put, Kind::Garbage),
            Decision::Deny(_)
        ));
        assert!(matches!(
            decide(&put, Op::Put, Kind::Config),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn read_writes_nothing_admin_does_all() {
        for k in KINDS {
            for op in OPS {
                let d = decide(&Role::Read, op, k);
                let writes = matches!(op, Op::Put | Op::Delete);
                assert_eq!(matches!(d, Decision::Deny(_)), writes, "{op:?} {k:?}");
                assert_eq!(decide(&Role::Admin, op, k), Decision::Allow);
            }
        }
    }

    #[test]
    fn group_patterns() {
        let p = GroupPattern::new("laptop:*").unwrap();
        assert!(p.matches("laptop:/home") && p.matches("laptop:"));
        assert!(!p.matches("server:/etc") && !p.matches("xlaptop:/home"));
        let p = GroupPattern::new("*:/home*").unwrap();
        assert!(p.matches("a:/home") && p.matches("b:/home/x"));
        assert!(!p.matches("a:/etc"));
        assert!(GroupPattern::new("").is_err());
        let p = GroupPattern::new(&"*a".repeat(30)).unwrap();
        assert!(!p.matches(&"a".repeat(29)));
    }
}
