//! Failed logins, counted per address: past the limit within the window
//! an address is refused (429) without its token being looked at, until
//! the window has passed. Guessing a 256-bit token is hopeless anyway;
//! this keeps a misconfigured or hostile client from filling the log and
//! the CPU.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry {
    since: Instant,
    failures: u32,
}

/// The per-address counter.
pub struct Limiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, Entry>>,
}

impl Limiter {
    /// Allows `max` failures per `window`.
    pub fn new(max: u32, window: Duration) -> Limiter {
        Limiter {
            max: max.max(1),
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` when the address is locked out.
    pub fn locked(&self, ip: IpAddr) -> Option<u64> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let e = seen.get(&ip)?;
        let age = e.since.elapsed();
        (e.failures >= self.max && age < self.window).then(|| (self.window - age).as_secs().max(1))
    }

    /// Counts a failed login; returns whether the address is now locked.
    pub fn fail(&self, ip: IpAddr) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 100_000 {
            let w = self.window;
            seen.retain(|_, e| e.since.elapsed() < w);
        }
        let e = seen.entry(ip).or_insert(Entry {
            since: Instant::now(),
            failures: 0,
        });
        if e.since.elapsed() >= self.window {
            *e = Entry {
                since: Instant::now(),
                failures: 0,
            };
        }
        e.failures += 1;
        e.failures >= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_after_the_limit_and_others_are_not() {
        let l = Limiter::new(3, Duration::from_millis(300));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(!l.fail(a));
        assert!(!l.fail(a));
        assert_eq!(l.locked(a), None);
        assert!(l.fail(a));
        assert!(l.locked(a).is_some());
        assert_eq!(l.locked(b), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(l.locked(a), None);
        assert!(!l.fail(a));
    }
}
