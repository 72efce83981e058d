//! Exclusive leases over a storage that can only create and delete.
//!
//! A lease is a file `locks/<purpose>-<generation>`. Whoever creates the
//! next generation holds it: creation never overwrites, so of two
//! processes reaching for the same generation exactly one wins. The
//! holder renews by creating the next generation itself; a process that
//! finds the newest generation expired takes over the same way. A holder
//! that was paused past its expiry notices before its next destructive
//! step ([`LeaseGuard::ensure`]) and stops, so a crashed or frozen
//! process never holds a repository forever and never acts on a lease it
//! lost.

use std::sync::Arc;
use std::time::Duration;

use cairn_format::maint::Lease;
use cairn_storage::{Kind, Storage};
use cairn_store::now_ns;

use crate::{Error, Result};

/// A lease this process holds.
#[derive(Debug)]
pub struct LeaseGuard {
    storage: Arc<dyn Storage>,
    lease: Lease,
    ttl_ns: i64,
    released: bool,
}

/// The newest generation of a lease, if any: `(generation, lease or the
/// reason it cannot be read)`.
pub fn current(
    storage: &dyn Storage,
    purpose: &str,
) -> Result<Option<(u64, std::result::Result<Lease, String>)>> {
    let newest = storage
        .list(Kind::Lock)?
        .iter()
        .filter_map(|o| {
            Lease::parse_name(&o.name)
                .filter(|(p, _)| *p == purpose)
                .map(|(_, g)| g)
        })
        .max();
    let Some(g) = newest else { return Ok(None) };
    let l = match storage.get(Kind::Lock, &Lease::name_for(purpose, g)) {
        Ok(d) => Lease::decode(&d).map_err(|e| e.to_string()),
        Err(e) if e.is_not_found() => Err("released while being read".to_string()),
        Err(e) => return Err(e.into()),
    };
    Ok(Some((g, l)))
}

/// Whether a lease's holder ran on this host and its process is gone: a
/// prune killed here need not block the next one until its lease expires.
fn crashed(l: &Lease) -> bool {
    l.pid != 0
        && !l.host.is_empty()
        && l.host == cairn_store::hostname()
        && l.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", l.pid)).exists()
}

fn describe(l: &Lease, now: i64) -> String {
    let left = (l.expires_ns - now).max(0) / 1_000_000_000;
    format!(
        "{} (taken {} s ago, expires in {} s unless renewed)",
        l.holder,
        (now - l.taken_ns).max(0) / 1_000_000_000,
        left
    )
}

impl LeaseGuard {
    /// Takes the lease `purpose`, or fails with [`cairn_store::Error::Busy`]
    /// naming the holder and when its lease expires. A lease that expired,
    /// or cannot be read, is taken over.
    pub fn acquire(
        storage: Arc<dyn Storage>,
        purpose: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseGuard> {
        let ttl_ns = i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX / 4);
        for _ in 0..8 {
            let now = now_ns();
            let next = match current(&*storage, purpose)? {
                None => 1,
                Some((_, Ok(l))) if l.expires_ns > now && !crashed(&l) => {
                    return Err(cairn_store::Error::Busy(format!(
                        "another {purpose} is running on {}: lease held by {}; wait for it to finish, or if that process is gone, run again once the lease expires",
                        storage.location(),
                        describe(&l, now)
                    ))
                    .into());
                }
                Some((g, _)) => g + 1,
            };
            let lease = Lease {
                purpose: purpose.to_string(),
                generation: next,
                holder: holder.to_string(),
                taken_ns: now,
                expires_ns: now.saturating_add(ttl_ns),
                host: cairn_store::hostname(),
                pid: std::process::id(),
            };
            match storage.put(Kind::Lock, &lease.name(), &lease.encode()) {
                Ok(()) => {
                    let guard = LeaseGuard {
                        storage,
                        lease,
                        ttl_ns,
                        released: false,
                    };
                    guard.remove_older();
                    return Ok(guard);
                }
                // Someone else took this generation first: look again.
                Err(cairn_storage::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(cairn_store::Error::Busy(format!(
            "could not take the {purpose} lease on {}: other processes keep taking it",
            storage.location()
        ))
        .into())
    }

    /// The lease as held now.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    fn remove_older(&self) {
        let Ok(list) = self.storage.list(Kind::Lock) else {
            return;
        };
        for o in list {
            if let Some((p, g)) = Lease::parse_name(&o.name)
                && p == self.lease.purpose
                && g < self.lease.generation
            {
                let _ = self.storage.delete(Kind::Lock, &o.name);
            }
        }
    }

    fn lost(&self, why: &str) -> Error {
        cairn_store::Error::Busy(format!(
            "the {} lease on {} was lost ({why}); stopped before changing anything more. Run again",
            self.lease.purpose,
            self.storage.location()
        ))
        .into()
    }

    /// Checks that the lease is still held, renewing it when a third of
    /// its time has passed. Call before every step that deletes or
    /// condemns: a process paused past its expiry stops here.
    pub fn ensure(&mut self) -> Result<()> {
        let now = now_ns();
        // Leave a tenth of the lease for the step that follows.
        if now >= self.lease.expires_ns - self.ttl_ns / 10 {
            return Err(self.lost("it expired while this process was busy or paused"));
        }
        if now < self.lease.taken_ns + self.ttl_ns / 3 {
            return Ok(());
        }
        let next = Lease {
            generation: self.lease.generation + 1,
            taken_ns: now,
            expires_ns: now.saturating_add(self.ttl_ns),
            ..self.lease.clone()
        };
        match self.storage.put(Kind::Lock, &next.name(), &next.encode()) {
            Ok(()) => {
                let old = std::mem::replace(&mut self.lease, next);
                let _ = self.storage.delete(Kind::Lock, &old.name());
                Ok(())
            }
            Err(cairn_storage::Error::AlreadyExists { .. }) => {
                Err(self.lost("another process took it over"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.storage.delete(Kind::Lock, &self.lease.name())?;
        Ok(())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.storage.delete(Kind::Lock, &self.lease.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemoryStorage;

    fn mem() -> Arc<dyn Storage> {
        Arc::new(MemoryStorage::new(std::env::temp_dir()))
    }

    #[test]
    fn second_holder_is_refused_with_the_holder_named() {
        let s = mem();
        let a = LeaseGuard::acquire(
            s.clone(),
            "prune",
            "alice@box pid 1",
            Duration::from_secs(60),
        )
        .unwrap();
        let e = LeaseGuard::acquire(s.clone(), "prune", "bob", Duration::from_secs(60))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("alice@box pid 1") && e.contains("expires in"),
            "{e}"
        );
        a.release().unwrap();
        LeaseGuard::acquire(s, "prune", "bob", Duration::from_secs(60)).unwrap();
    }

    #[test]
    fn expired_lease_is_taken_over_and_its_holder_stops() {
        let s = mem();
        let mut a =
            LeaseGuard::acquire(s.clone(), "prune", "a", Duration::from_millis(200)).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let mut b = LeaseGuard::acquire(s.clone(), "prune", "b", Duration::from_secs(60)).unwrap();
        assert_eq!(b.lease().generation, 2);
        let e = a.ensure().unwrap_err().to_string();
        assert!(e.contains("lost"), "{e}");
        b.ensure().unwrap();
        // The paused holder's drop removes only its own (already gone) file.
        drop(a);
        assert!(current(&*s, "prune").unwrap().is_some());
    }

    #[test]
    fn lease_of_a_dead_process_on_this_host_is_taken_over() {
        let s = mem();
        let now = now_ns();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        let l = Lease {
            purpose: "prune".into(),
            generation: 4,
            holder: "crashed".into(),
            taken_ns: now,
            expires_ns: now + 600_000_000_000,
            host: cairn_store::hostname(),
            pid,
        };
        s.put(Kind::Lock, &l.name(), &l.encode()).unwrap();
        let g = LeaseGuard::acquire(s.clone(), "prune", "b", Duration::from_secs(60)).unwrap();
        assert_eq!(g.lease().generation, 5);
        // Alive elsewhere: refused.
        drop(g);
        let other = Lease {
            host: "some-other-host".into(),
            ..l
        };
        s.put(Kind::Lock, &other.name(), &other.encode()).unwrap();
        assert!(LeaseGuard::acquire(s, "prune", "b", Duration::from_secs(60)).is_err());
    }

    #[test]
    fn renewal_takes_the_next_generation() {
        let s = mem();
        let mut a =
            LeaseGuard::acquire(s.clone(), "prune", "a", Duration::from_millis(600)).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        a.ensure().unwrap();
        assert_eq!(a.lease().generation, 2);
        let names: Vec<String> = s
            .list(Kind::Lock)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, vec![Lease::name_for("prune", 2)]);
    }
}
