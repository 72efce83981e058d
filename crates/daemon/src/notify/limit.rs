//! The per-channel rate limit: at most `max` alerts in any `window`
//! (sliding), the rest held back and sent as one summary when the window
//! has room again. A job that flaps, or a disk that fills under every job
//! at once, then costs a phone one burst and one summary, not a hundred
//! pushes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Event;
use super::render::{Held, HeldBack, MAX_LISTED};

/// At most `max` alerts per `window` on each channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Alerts allowed in any window; 0 turns the limit off.
    pub max: u32,
    /// The length of the sliding window.
    pub window: Duration,
}

impl Default for RateLimit {
    /// 10 per hour: more than one bad night needs, few enough that nobody
    /// mutes the channel.
    fn default() -> RateLimit {
        RateLimit {
            max: 10,
            window: Duration::from_secs(3600),
        }
    }
}

/// One channel's limit: when its alerts went out, and what it holds back.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    /// When the alerts of the current window went out, oldest first.
    sent: VecDeque<Instant>,
    /// The summary being gathered, if anything is held back.
    held: Option<HeldBack>,
}

impl Limiter {
    /// A limiter with nothing sent or held.
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            sent: VecDeque::new(),
            held: None,
        }
    }

    /// Takes a slot for `event` and says true, or holds it back. While
    /// anything is held back, new alerts join it, so they reach people in
    /// the order they happened.
    pub fn admit(&mut self, event: &Event, now: Instant) -> bool {
        if self.held.is_none() && self.take_slot(now) {
            return true;
        }
        let h = self.held.get_or_insert_with(|| HeldBack {
            host: String::new(),
            time_ns: 0,
            listed: Vec::new(),
            total: 0,
            bad: false,
            limit: self.limit,
        });
        h.host.clone_from(&event.host);
        if h.listed.len() < MAX_LISTED {
            h.listed.push(Held {
                job: event.job.clone(),
                kind: event.kind,
                time_ns: event.time_ns,
            });
        }
        h.total += 1;
        h.bad |= event.kind.is_bad();
        false
    }

    /// Whether alerts are held back, waiting for their summary.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// How many alerts are held back.
    pub fn held_total(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.total)
    }

    /// The summary of what is held back, if the window has room for it
    /// (it takes a slot) or `force` (at a flush: a summary held until the
    /// window opens would be lost at shutdown).
    pub fn summary(&mut self, now: Instant, now_ns: i64, force: bool) -> Option<HeldBack> {
        self.held.as_ref()?;
        if !self.take_slot(now) && !force {
            return None;
        }
        let mut h = self.held.take()?;
        h.time_ns = now_ns;
        Some(h)
    }

    /// When a slot frees next, if the window is full: when to wake up to
    /// send a summary.
    pub fn next_slot(&mut self, now: Instant) -> Option<Instant> {
        self.expire(now);
        if self.limit.max == 0 || self.sent.len() < self.limit.max as usize {
            return None;
        }
        self.sent.front().map(|t| *t + self.limit.window)
    }

    /// Records a send now if the window has room.
    fn take_slot(&mut self, now: Instant) -> bool {
        if self.limit.max == 0 {
            return true;
        }
        self.expire(now);
        if self.sent.len() < self.limit.max as usize {
            self.sent.push_back(now);
            true
        } else {
            false
        }
    }

    /// Forgets the sends that left the window.
    fn expire(&mut self, now: Instant) {
        while let Some(t) = self.sent.front() {
            if now.saturating_duration_since(*t) >= self.limit.window {
                self.sent.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::EventKind;

    fn event(job: &str, kind: EventKind) -> Event {
        Event {
            job: job.into(),
            kind,
            message: String::new(),
            time_ns: 0,
            host: "nas".into(),
        }
    }

    fn limiter(max: u32) -> Limiter {
        Limiter::new(RateLimit {
            max,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn holds_back_past_max_and_sends_one_summary_when_the_window_allows() {
        let t0 = Instant::now();
        let mut l = limiter(3);
        let admitted: Vec<bool> = (0..5)
            .map(|i| l.admit(&event(&format!("j{i}"), EventKind::Failed), t0))
            .collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        assert!(l.is_holding());
        // The window is full: no summary yet, and it says when.
        assert!(l.summary(t0, 0, false).is_none());
        assert_eq!(l.next_slot(t0), Some(t0 + Duration::from_secs(60)));
        let later = t0 + Duration::from_secs(60);
        let h = l.summary(later, 7, false).unwrap();
        assert_eq!(h.total, 2);
        assert_eq!(h.time_ns, 7);
        assert!(h.bad);
        let jobs: Vec<&str> = h.listed.iter().map(|x| x.job.as_str()).collect();
        assert_eq!(jobs, ["j3", "j4"]);
        assert!(!l.is_holding());
        // The summary took one slot of the new window; two remain.
        assert!(l.admit(&event("a", EventKind::Recovered), later));
        assert!(l.admit(&event("b", EventKind::Recovered), later));
        assert!(!l.admit(&event("c", EventKind::Recovered), later));
    }

    #[test]
    fn new_alerts_join_what_is_held_so_order_is_kept() {
        let t0 = Instant::now();
        let mut l = limiter(1);
        assert!(l.admit(&event("a", EventKind::Failed), t0));
        assert!(!l.admit(&event("b", EventKind::Failed), t0));
        // The window has room again, but "b" waits in the summary: "c"
        // joins it rather than overtaking it.
        let later = t0 + Duration::from_secs(61);
        assert!(!l.admit(&event("c", EventKind::Recovered), later));
        let h = l.summary(later, 0, false).unwrap();
        assert_eq!(h.total, 2);
    }

    #[test]
    fn a_flush_forces_the_summary_and_the_list_stays_bounded() {
        let t0 = Instant::now();
        let mut l = limiter(1);
        for i in 0..=(MAX_LISTED + 10) {
            l.admit(&event(&format!("j{i}"), EventKind::Recovered), t0);
        }
        assert!(l.summary(t0, 0, false).is_none());
        let h = l.summary(t0, 0, true).unwrap();
        assert_eq!(h.total, MAX_LISTED + 10);
        assert_eq!(h.listed.len(), MAX_LISTED);
        assert!(!h.bad);
    }

    #[test]
    fn max_zero_is_no_limit() {
        let t0 = Instant::now();
        let mut l = limiter(0);
        assert!((0..1000).all(|_| l.admit(&event("a", EventKind::Failed), t0)));
        assert_eq!(l.next_slot(t0), None);
    }
}
