//! A storage that enforces a caller's role on every call.
//!
//! Beyond the yes/no of [`crate::policy`], uploads are checked for what
//! they claim: a content-addressed object's name must be the BLAKE3 of
//! its bytes (so a source cannot plant bytes under a name another writer
//! will trust), and a put token's snapshots must belong to its groups.
//! Every refusal is reported to the audit hook with the caller's name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_format::Id;
use cairn_storage::{Error, Kind, ObjectInfo, Result, Storage, valid_name};

use crate::policy::{Decision, Op, Role, decide};

/// One refused request, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Who asked (the token's name).
    pub principal: String,
    /// With which role.
    pub role: &'static str,
    /// What was asked.
    pub op: Op,
    /// On which kind.
    pub kind: Kind,
    /// On which object (empty for a listing).
    pub name: String,
    /// Why it was refused.
    pub reason: String,
}

/// Receives every refusal.
pub type Audit = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// A storage seen through one caller's role.
pub struct GuardedStorage {
    inner: Arc<dyn Storage>,
    role: Role,
    principal: String,
    audit: Audit,
}

impl std::fmt::Debug for GuardedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GuardedStorage({} as {} {})",
            self.inner.location(),
            self.role.name(),
            self.principal
        )
    }
}

impl GuardedStorage {
    /// `inner` as `principal` with `role` sees it.
    pub fn new(inner: Arc<dyn Storage>, role: Role, principal: &str, audit: Audit) -> Self {
        GuardedStorage {
            inner,
            role,
            principal: principal.to_string(),
            audit,
        }
    }

    /// The caller's role name, for the protocol greeting.
    pub fn role_name(&self) -> &'static str {
        self.role.name()
    }

    /// Refuses before any byte is sent what an upload of `name` would
    /// be refused for by role or name alone.
    pub fn admit_put(&self, kind: Kind, name: &str) -> Result<()> {
        self.check_name(Op::Put, kind, name)?;
        if let Decision::Deny(why) = decide(&self.role, Op::Put, kind) {
            return Err(self.refuse(Op::Put, kind, name, why));
        }
        Ok(())
    }

    fn refuse(&self, op: Op, kind: Kind, name: &str, reason: String) -> Error {
        (self.audit)(&Refusal {
            principal: self.principal.clone(),
            role: self.role.name(),
            op,
            kind,
            name: name.to_string(),
            reason: reason.clone(),
        });
        Error::Refused(reason)
    }

    /// Names are checked before anything else: `../`, `/` and anything
    /// outside `[a-z0-9-]` never reach a backend.
    fn check_name(&self, op: Op, kind: Kind, name: &str) -> Result<()> {
        if kind == Kind::Config || valid_name(name) {
            return Ok(());
        }
        Err(self.refuse(op, kind, name, format!("invalid object name {name:?}")))
    }

    fn in_groups(&self, group: &str) -> bool {
        match &self.role {
            Role::Put(Some(p)) => p.matches(group),
            _ => true,
        }
    }

    /// Whether a snapshot's bytes belong to the caller's groups.
    fn snapshot_group_ok(&self, data: &[u8]) -> std::result::Result<(), String> {
        let f = cairn_format::snapshot::decode(data).map_err(|e| format!("snapshot: {e}"))?;
        if self.in_groups(&f.envelope.group) {
            Ok(())
        } else {
            Err(format!(
                "snapshot of group {:?} is outside this token's groups",
                f.envelope.group
            ))
        }
    }

    /// Applies the policy; for [`Decision::OwnGroups`] reads the snapshot
    /// to decide. Returns the object's bytes when it had to read them.
    fn admit(&self, op: Op, kind: Kind, name: &str) -> Result<Option<Vec<u8>>> {
        self.check_name(op, kind, name)?;
        match decide(&self.role, op, kind) {
            Decision::Allow => Ok(None),
            Decision::Deny(why) => Err(self.refuse(op, kind, name, why)),
            Decision::OwnGroups => {
                let data = self.inner.get(kind, name)?;
                match self.snapshot_group_ok(&data) {
                    Ok(()) => Ok(Some(data)),
                    Err(why) => Err(self.refuse(op, kind, name, why)),
                }
            }
        }
    }

    /// Before a source's snapshot is published: the server's own record
    /// of when it arrived, which retention goes by (a source's claimed
    /// time is its own word), and of who sent it, which prune goes by. A
    /// crash in between leaves a receipt without a snapshot, which means
    /// nothing. Admin uploads (the box's own jobs, `repair snapshots`)
    /// need none.
    fn receipt(&self, kind: Kind, name: &str) -> Result<()> {
        if kind != Kind::Snapshot || self.role == Role::Admin {
            return Ok(());
        }
        // The same snapshot uploaded again keeps its first receipt.
        self.put_receipt(Kind::Receipt, name)
    }

    /// Stores a receipt (now, from this caller) under `name`, keeping one
    /// stored already: receipts and origin marks share the body.
    fn put_receipt(&self, kind: Kind, name: &str) -> Result<()> {
        let r = cairn_format::maint::Receipt {
            received_ns: cairn_store::now_ns(),
            sender: self.principal.clone(),
        };
        match self.inner.put(kind, name, &r.encode()) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// This caller's tag in origin marks.
    fn tag(&self) -> [u8; 8] {
        cairn_store::origin_tag(&self.principal)
    }

    /// Before a source's pack is published: the box's record of who
    /// uploaded it, so that other writers do not deduplicate against what
    /// this one stored (dedup poisoning). A pack already stored has the
    /// same bytes as this upload, so it keeps whatever origin it has.
    fn mark_origin(&self, kind: Kind, name: &str) -> Result<()> {
        if kind != Kind::Pack || self.role == Role::Admin {
            return Ok(());
        }
        match self.inner.size(Kind::Pack, name) {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let Some(id) = Id::from_hex(name) else {
            return Ok(());
        };
        self.put_receipt(
            Kind::Origin,
            &cairn_format::maint::origin_name(&id, &self.tag()),
        )
    }

    /// The packs a put caller is shown: unmarked ones (the owner's, or
    /// verified) and its own, never another source's.
    fn scoped_packs(&self, all: Vec<ObjectInfo>) -> Result<Vec<ObjectInfo>> {
        let mut foreign = std::collections::HashSet::new();
        let mut own = std::collections::HashSet::new();
        let tag = self.tag();
        for o in self.inner.list(Kind::Origin)? {
            if let Some((pack, t)) = cairn_format::maint::parse_origin_name(&o.name) {
                if t == tag {
                    own.insert(pack.to_hex());
                } else {
                    foreign.insert(pack.to_hex());
                }
            }
        }
        Ok(all
            .into_iter()
            .filter(|o| own.contains(&o.name) || !foreign.contains(&o.name))
            .collect())
    }

    /// Whether a put caller's range read of a pack stays inside the
    /// pack's plaintext tail (trailer, its length, end magic): what a
    /// backup reads to re-index the packs of an interrupted run. Index
    /// files copy the trailers anyway, so this reveals nothing new; any
    /// other range of a pack stays refused.
    fn trailer_read(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<bool> {
        if kind != Kind::Pack || !matches!(self.role, Role::Put(_)) || !valid_name(name) {
            return Ok(false);
        }
        let size = self.inner.size(kind, name)?;
        let fixed = cairn_format::pack::TAIL_FIXED as u64;
        if size < fixed || offset.checked_add(len).is_none_or(|end| end > size) {
            return Ok(false);
        }
        let tail = self.inner.get_range(kind, name, size - fixed, fixed)?;
        let Ok(t) = cairn_format::pack::trailer_len(&tail) else {
            return Ok(false);
        };
        let start = size.saturating_sub(fixed + u64::from(t));
        Ok(offset >= start)
    }

    /// Whether an index file a source uploads tells the truth about the
    /// packs it lists: each must be stored, of that size, with exactly
    /// that trailer. Otherwise a source could point other writers at a
    /// trusted pack for a blob that is not there (index poisoning).
    fn index_truthful(&self, data: &[u8]) -> std::result::Result<(), String> {
        if !matches!(self.role, Role::Put(_)) {
            return Ok(());
        }
        let packs = cairn_format::index::decode(data).map_err(|e| format!("index file: {e}"))?;
        for p in packs {
            let name = p.pack.to_hex();
            let size = self.inner.size(Kind::Pack, &name).map_err(|_| {
                format!(
                    "the index file lists pack {}, which is not stored: upload packs before their index",
                    p.pack.short()
                )
            })?;
            if size != p.size {
                return Err(format!(
                    "the index file gives pack {} {} bytes; it has {size}",
                    p.pack.short(),
                    p.size
                ));
            }
            let stored = cairn_store::read_pack_trailer(&*self.inner, &p.pack, size)
                .map_err(|e| format!("pack {}: {e}", p.pack.short()))?;
            if stored.trailer != p.trailer {
                return Err(format!(
                    "the index file's entries for pack {} differ from the pack's own trailer",
                    p.pack.short()
                ));
            }
        }
        Ok(())
    }

    /// Checks bytes about to be created under `name`.
    fn check_upload(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.check_name(Op::Put, kind, name)?;
        let decision = decide(&self.role, Op::Put, kind);
        if let Decision::Deny(why) = decision {
            return Err(self.refuse(Op::Put, kind, name, why));
        }
        if kind.content_addressed() && Id(cairn_crypto::plain_hash(data)).to_hex() != name {
            return Err(self.refuse(
                Op::Put,
                kind,
                name,
                "the bytes do not hash to the object's name".into(),
            ));
        }
        if kind == Kind::Snapshot
            && let Err(why) = self.snapshot_group_ok(data)
        {
            return Err(self.refuse(Op::Put, kind, name, why));
        }
        if kind == Kind::Index
            && let Err(why) = self.index_truthful(data)
        {
            return Err(self.refuse(Op::Put, kind, name, why));
        }
        Ok(())
    }
}

impl Storage for GuardedStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        match self.admit(Op::Get, kind, name)? {
            Some(d) => Ok(d),
            None => self.inner.get(kind, name),
        }
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if self.trailer_read(kind, name, offset, len)? {
            return self.inner.get_range(kind, name, offset, len);
        }
        match self.admit(Op::GetRange, kind, name)? {
            Some(d) => {
                let end = offset.checked_add(len).filter(|&e| e <= d.len() as u64);
                match end {
                    Some(e) => Ok(d[offset as usize..e as usize].to_vec()),
                    None => self.inner.get_range(kind, name, offset, len),
                }
            }
            None => self.inner.get_range(kind, name, offset, len),
        }
    }

    fn get_range_into(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if self.trailer_read(kind, name, offset, len)? {
            return self.inner.get_range_into(kind, name, offset, len, buf);
        }
        match self.admit(Op::GetRange, kind, name)? {
            Some(_) => {
                *buf = self.get_range(kind, name, offset, len)?;
                Ok(())
            }
            None => self.inner.get_range_into(kind, name, offset, len, buf),
        }
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        match self.admit(Op::Size, kind, name)? {
            Some(d) => Ok(d.len() as u64),
            None => self.inner.size(kind, name),
        }
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.check_upload(kind, name, data)?;
        self.mark_origin(kind, name)?;
        // The receipt first, like the mark: a source's snapshot is never
        // without one, so prune knows whose copies it needs.
        self.receipt(kind, name)?;
        self.inner.put(kind, name, data)
    }

    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        self.check_name(Op::Put, kind, name)?;
        if let Decision::Deny(why) = decide(&self.role, Op::Put, kind) {
            return Err(self.refuse(Op::Put, kind, name, why));
        }
        if kind.content_addressed() {
            // Hash the staged file as it will be published: a pack is
            // checked without being held in memory.
            let mut f = std::fs::File::open(file).map_err(|e| Error::io("open", file, e))?;
            let mut h = cairn_crypto::PlainHasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                use std::io::Read;
                let n = f.read(&mut buf).map_err(|e| Error::io("read", file, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            if Id(h.finalize()).to_hex() != name {
                return Err(self.refuse(
                    Op::Put,
                    kind,
                    name,
                    "the bytes do not hash to the object's name".into(),
                ));
            }
        }
        if kind == Kind::Snapshot || (kind == Kind::Index && matches!(self.role, Role::Put(_))) {
            let data = std::fs::read(file).map_err(|e| Error::io("read", file, e))?;
            let verdict = if kind == Kind::Snapshot {
                self.snapshot_group_ok(&data)
            } else {
                self.index_truthful(&data)
            };
            if let Err(why) = verdict {
                return Err(self.refuse(Op::Put, kind, name, why));
            }
        }
        self.mark_origin(kind, name)?;
        self.receipt(kind, name)?;
        self.inner.put_file(kind, name, file)
    }

    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>> {
        match decide(&self.role, Op::List, kind) {
            Decision::Allow if kind == Kind::Pack && matches!(self.role, Role::Put(_)) => {
                self.scoped_packs(self.inner.list(kind)?)
            }
            // Marks are the box's business; a source sees none.
            Decision::Allow if kind == Kind::Origin && matches!(self.role, Role::Put(_)) => {
                Ok(Vec::new())
            }
            Decision::Allow => self.inner.list(kind),
            Decision::Deny(why) => Err(self.refuse(Op::List, kind, "", why)),
            Decision::OwnGroups => {
                let mut out = Vec::new();
                for o in self.inner.list(kind)? {
                    match self.inner.get(kind, &o.name) {
                        Ok(d) if self.snapshot_group_ok(&d).is_ok() => out.push(o),
                        // Gone since the listing, or someone else's: not listed.
                        _ => {}
                    }
                }
                Ok(out)
            }
        }
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        self.admit(Op::Delete, kind, name)?;
        self.inner.delete(kind, name)
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        self.inner.staging_dir()
    }

    fn prepare(&self) -> Result<()> {
        if self.role != Role::Admin {
            return Err(self.refuse(
                Op::Put,
                Kind::Config,
                "config",
                format!("a {} token cannot create a repository", self.role.name()),
            ));
        }
        self.inner.prepare()
    }

    fn clean_staging(&self, min_age: std::time::Duration) {
        // Staging files belong to the box; only its own jobs clean them.
        if self.role == Role::Admin {
            self.inner.clean_staging(min_age);
        }
    }
}
