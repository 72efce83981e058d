//! When a job runs: intervals (`every`), calendar times (`at`), jitter,
//! blackout windows and retries after a failure.
//!
//! The next run is always computed from the last attempt that was
//! recorded, never from a list of missed slots: a daemon that slept
//! through three due times finds one run due when it wakes and, once
//! that run is recorded, the next one lies in the future. That is what
//! makes a catch-up happen once, never twice and never zero times.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A set of weekdays (bit 0 is Monday).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    /// Every day of the week.
    pub const ALL: Days = Days(0x7f);

    fn has(self, w: Weekday) -> bool {
        self.0 & (1 << (w.to_monday_zero_offset() as u8)) != 0
    }

    /// Parses `Mon..Fri`, `Sat,Sun`, `Mon..Wed,Fri`, `*`.
    pub fn parse(s: &str) -> Result<Days, String> {
        if s == "*" {
            return Ok(Days::ALL);
        }
        let mut bits = 0u8;
        for part in s.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once("..") {
                Some((a, b)) => (weekday(a)?, weekday(b)?),
                None => (weekday(part)?, weekday(part)?),
            };
            let mut d = a;
            loop {
                bits |= 1 << d;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        Ok(Days(bits))
    }
}

fn weekday(s: &str) -> Result<u8, String> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let l = s.trim().to_ascii_lowercase();
    NAMES
        .iter()
        .position(|n| l.len() >= 3 && n.starts_with(&l[..3]) && full_or_short(&l))
        .map(|i| i as u8)
        .ok_or_else(|| format!("{s:?} is not a weekday; use Mon, Tue, Wed, Thu, Fri, Sat or Sun"))
}

fn full_or_short(l: &str) -> bool {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    l.len() == 3 || FULL.contains(&l)
}

/// Parses `HH:MM`; `24:00` only where `end` allows it.
fn time_of_day(s: &str, end: bool) -> Result<(u8, u8), String> {
    let bad = || format!("{s:?} is not a time like 02:30 (24-hour clock)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let h: u8 = h.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
        return Err(bad());
    }
    Ok((h, m))
}

/// Calendar times: `02:30`, `Mon..Fri 18:00`, `Sat 09:00,21:00`, `*:15`
/// (every hour at a quarter past), `hourly`, `daily`, `weekly`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    /// As written, for status pages.
    text: String,
    days: Days,
    /// Times of day, sorted; empty for an hourly calendar.
    times: Vec<(u8, u8)>,
    /// Minute past each hour, for hourly calendars.
    hourly: Option<u8>,
}

impl Calendar {
    /// Parses the calendar subset users write.
    pub fn parse(s: &str) -> Result<Calendar, String> {
        let t = s.trim();
        match t {
            "hourly" => return Calendar::parse("*:00"),
            "daily" => return Calendar::parse("00:00"),
            "weekly" => return Calendar::parse("Mon 00:00"),
            _ => {}
        }
        let (days, times) = match t.rsplit_once(' ') {
            Some((d, tm)) => (Days::parse(d.trim())?, tm),
            None => (Days::ALL, t),
        };
        if let Some(m) = times.strip_prefix("*:") {
            let m: u8 = m
                .parse()
                .ok()
                .filter(|m| *m < 60)
                .ok_or_else(|| format!("{s:?}: the minute in *:MM must be 00 to 59"))?;
            return Ok(Calendar {
                text: s.trim().to_string(),
                days,
                times: Vec::new(),
                hourly: Some(m),
            });
        }
        let mut list = times
            .split(',')
            .map(|x| time_of_day(x, false))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!(
                    "{e}; accepted: hourly, daily, weekly, HH:MM, *:MM, or days then times such as \"Mon..Fri 18:00\""
                )
            })?;
        list.sort();
        list.dedup();
        Ok(Calendar {
            text: s.trim().to_string(),
            days,
            times: list,
            hourly: None,
        })
    }

    /// The first calendar time strictly after `t`.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Timestamp {
        let z = t.to_zoned_datetime(tz.clone());
        if let Some(m) = self.hourly {
            let Ok(mut dt) = z
                .datetime()
                .with()
                .minute(m as i8)
                .second(0)
                .subsec_nanosecond(0)
                .build()
            else {
                return t;
            };
            for _ in 0..(24 * 8 + 2) {
                if self.days.has(dt.weekday())
                    && let Ok(c) = dt.to_zoned_datetime(tz.clone())
                    && c.timestamp() > t
                {
                    return c.timestamp();
                }
                dt = dt.checked_add(1.hour()).unwrap_or(dt);
            }
            return t;
        }
        let day = z.date();
        for d in 0..9i32 {
            let Ok(date) = day.checked_add(d.days()) else {
                break;
            };
            if !self.days.has(date.weekday()) {
                continue;
            }
            for &(h, m) in &self.times {
                if let Some(c) = at(date, h, m, tz)
                    && c > t
                {
                    return c;
                }
            }
        }
        // Unreachable with a non-empty day set; keeps the scheduler alive.
        t.checked_add(jiff::SignedDuration::from_hours(24))
            .unwrap_or(t)
    }

    /// The longest gap between two of its times within a week, for the
    /// default of `overdue_after`.
    pub fn longest_gap(&self, from: Timestamp, tz: &TimeZone) -> Duration {
        let mut t = self.next_after(from, tz);
        let mut longest = Duration::ZERO;
        for _ in 0..(24 * 8) {
            let n = self.next_after(t, tz);
            let gap = n.duration_since(t).unsigned_abs();
            longest = longest.max(gap);
            if n.duration_since(from).as_secs() > 8 * 86_400 {
                break;
            }
            t = n;
        }
        longest
    }
}

/// A local time on a date; a time skipped by a daylight-saving change
/// lands just after the change.
fn at(date: Date, h: u8, m: u8, tz: &TimeZone) -> Option<Timestamp> {
    let dt: DateTime = if h == 24 {
        date.checked_add(1.day()).ok()?.at(0, 0, 0, 0)
    } else {
        date.at(h as i8, m as i8, 0, 0)
    };
    dt.to_zoned_datetime(tz.clone()).ok().map(|z| z.timestamp())
}

/// A window in which a job must not start: `Mon..Fri 08:00-18:00`,
/// `22:00-06:00` (every night, across midnight).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    days: Days,
    from: (u8, u8),
    to: (u8, u8),
}

impl Window {
    /// Parses `[DAYS ]HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Window, String> {
        let t = s.trim();
        let (days, range) = match t.rsplit_once(' ') {
            Some((d, r)) => (Days::parse(d.trim())?, r),
            None => (Days::ALL, t),
        };
        let (a, b) = range.split_once('-').ok_or_else(|| {
            format!("{s:?} is not a window; write e.g. \"Mon..Fri 08:00-18:00\" or \"22:00-06:00\"")
        })?;
        let from = time_of_day(a, false)?;
        let to = time_of_day(b, true)?;
        if from == to {
            return Err(format!(
                "{s:?}: the window starts and ends at the same time"
            ));
        }
        Ok(Window { days, from, to })
    }

    /// When the window holding `t` ends, if one does (a window belongs to
    /// the day it starts on).
    pub fn end_if_inside(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let today = t.to_zoned_datetime(tz.clone()).date();
        for back in [0i32, 1] {
            let Ok(day) = today.checked_sub(back.days()) else {
                continue;
            };
            if !self.days.has(day.weekday()) {
                continue;
            }
            let start = at(day, self.from.0, self.from.1, tz)?;
            let end_day = if self.to > self.from {
                day
            } else {
                day.checked_add(1.day()).ok()?
            };
            let end = at(end_day, self.to.0, self.to.1, tz)?;
            if start <= t && t < end {
                return Some(end);
            }
        }
        None
    }
}

/// What, besides the clock, a run waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    /// Only the clock.
    #[default]
    Always,
    /// The machine to back up answers (pull jobs).
    Reachable,
    /// The repository's disk is mounted.
    Mounted,
}

/// A job's schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Run this long after the last attempt started.
    pub every: Option<Duration>,
    /// Or at these calendar times.
    pub at: Vec<Calendar>,
    /// Start up to this much later than due, the same delay for the same
    /// slot across restarts, so many machines do not start at once.
    pub jitter: Duration,
    /// What else must hold.
    pub when: When,
    /// How often to look whether `when` holds.
    pub probe_every: Duration,
    /// Windows in which no run starts.
    pub blackout: Vec<Window>,
    /// The wait before the first retry of a failed run (doubling after
    /// each further failure); zero means [`FIRST_RETRY`].
    pub retry: Duration,
}

/// A duration in the largest units that divide it: `1d`, `90min`, `45s`.
pub fn words(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("min", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// What the schedule needs to know of the past.
#[derive(Clone, Copy, Debug, Default)]
pub struct Past {
    /// When the job was first seen by a daemon (ns).
    pub created_ns: i64,
    /// When the last attempt started (ns).
    pub last_start_ns: Option<i64>,
    /// When the last attempt ended (ns).
    pub last_end_ns: Option<i64>,
    /// Failed attempts since the last success.
    pub failures: u32,
}

/// The first retry waits this long; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);

impl Schedule {
    /// The schedule in words, for status pages: `every 1d`, `at 02:30`,
    /// `when the disk appears`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = self.every {
            parts.push(format!("every {}", words(e)));
        }
        if !self.at.is_empty() {
            let t: Vec<&str> = self.at.iter().map(|c| c.text.as_str()).collect();
            parts.push(format!("at {}", t.join(", ")));
        }
        match self.when {
            When::Always => {}
            When::Reachable => parts.push("when reachable".into()),
            When::Mounted => parts.push("when the disk appears".into()),
        }
        parts.join(", ")
    }

    /// Whether the clock alone ever makes the job due.
    pub fn timed(&self) -> bool {
        self.every.is_some() || !self.at.is_empty()
    }

    /// The longest a retry waits: never longer than the interval, and
    /// at most an hour.
    fn retry_cap(&self) -> Duration {
        let hour = Duration::from_secs(3600);
        self.every
            .map_or(hour, |e| e.min(hour))
            .max(self.first_retry())
    }

    fn first_retry(&self) -> Duration {
        if self.retry.is_zero() {
            FIRST_RETRY
        } else {
            self.retry
        }
    }

    /// When the job is next due by the clock (ns since the epoch), before
    /// blackout windows; `None` for a job that only runs on an event.
    pub fn next_due(&self, name: &str, past: &Past, tz: &TimeZone) -> Option<i64> {
        if past.failures > 0
            && let Some(end) = past.last_end_ns
        {
            let shift = (past.failures - 1).min(20);
            let wait = self
                .first_retry()
                .saturating_mul(1u32 << shift)
                .min(self.retry_cap());
            let retry = end.saturating_add(wait.as_nanos() as i64);
            return Some(match self.regular_due(past, tz) {
                Some(r) => r.min(retry),
                None => retry,
            });
        }
        let due = self.regular_due(past, tz)?;
        Some(due.saturating_add(self.jitter_for(name, due)))
    }

    fn regular_due(&self, past: &Past, tz: &TimeZone) -> Option<i64> {
        if let Some(every) = self.every {
            return Some(match past.last_start_ns {
                None => past.created_ns,
                Some(s) => s.saturating_add(every.as_nanos() as i64),
            });
        }
        if self.at.is_empty() {
            return None;
        }
        let base = past.last_start_ns.unwrap_or(past.created_ns);
        let base = Timestamp::from_nanosecond(base as i128).ok()?;
        self.at
            .iter()
            .map(|c| c.next_after(base, tz))
            .min()
            .map(|t| t.as_nanosecond() as i64)
    }

    /// A delay in `[0, jitter)` that depends only on the job and the slot.
    fn jitter_for(&self, name: &str, due: i64) -> i64 {
        let j = self.jitter.as_nanos() as u64;
        if j == 0 {
            return 0;
        }
        let mut h = blake3::Hasher::new();
        h.update(name.as_bytes());
        h.update(&due.to_le_bytes());
        let b = h.finalize();
        let v = u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]));
        (v % j) as i64
    }

    /// When a blackout window holding `now` ends, if one does.
    pub fn blackout_end(&self, now_ns: i64, tz: &TimeZone) -> Option<i64> {
        let t = Timestamp::from_nanosecond(now_ns as i128).ok()?;
        self.blackout
            .iter()
            .filter_map(|w| w.end_if_inside(t, tz))
            .max()
            .map(|t| t.as_nanosecond() as i64)
    }

    /// How long without a success counts as overdue by default: twice the
    /// interval plus an hour (`None` for jobs that run only on events).
    pub fn default_overdue(&self, now_ns: i64, tz: &TimeZone) -> Option<Duration> {
        let interval = match self.every {
            Some(e) => e,
            None => {
                let t = Timestamp::from_nanosecond(now_ns as i128).ok()?;
                self.at.iter().map(|c| c.longest_gap(t, tz)).max()?
            }
        };
        Some(interval.saturating_mul(2) + Duration::from_secs(3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ns(s: &str) -> i64 {
        ts(s).as_nanosecond() as i64
    }

    #[test]
    fn calendars_parse_and_step() {
        let c = Calendar::parse("02:30").unwrap();
        // 2026-12-02 is a Wednesday.
        assert_eq!(
            c.next_after(ts("2026-12-02T01:00:00Z"), &utc()),
            ts("2026-12-02T02:30:00Z")
        );
        assert_eq!(
            c.next_after(ts("2026-12-02T02:30:00Z"), &utc()),
            ts("2026-12-03T02:30:00Z")
        );
        let wd = Calendar::parse("Mon..Fri 18:00").unwrap();
        assert_eq!(
            wd.next_after(ts("2026-12-04T19:00:00Z"), &utc()),
            ts("2026-12-07T18:00:00Z"),
            "Friday evening: next is Monday"
        );
        let h = Calendar::parse("hourly").unwrap();
        assert_eq!(
            h.next_after(ts("2026-12-02T10:00:00Z"), &utc()),
            ts("2026-12-02T11:00:00Z")
        );
        let q = Calendar::parse("*:15").unwrap();
        assert_eq!(
            q.next_after(ts("2026-12-02T10:20:00Z"), &utc()),
            ts("2026-12-02T11:15:00Z")
        );
        let w = Calendar::parse("weekly").unwrap();
        assert_eq!(
            w.next_after(ts("2026-12-02T10:00:00Z"), &utc()),
            ts("2026-12-07T00:00:00Z")
        );
        let two = Calendar::parse("Sat,Sun 09:00,21:00").unwrap();
        assert_eq!(
            two.next_after(ts("2026-12-05T10:00:00Z"), &utc()),
            ts("2026-12-05T21:00:00Z")
        );
        assert_eq!(
            wd.longest_gap(ts("2026-12-02T00:00:00Z"), &utc()),
            Duration::from_secs(3 * 86_400)
        );
        for bad in ["25:00", "Mon..Fry 10:00", "10", "*:99", "noon"] {
            assert!(Calendar::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_local_time_that_daylight_saving_skips_still_runs() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let c = Calendar::parse("02:30").unwrap();
        // 2026-03-29: clocks jump from 02:00 to 03:00 in Berlin.
        let next = c.next_after(ts("2026-03-28T12:00:00Z"), &tz);
        assert!(next > ts("2026-03-28T12:00:00Z") && next < ts("2026-03-29T12:00:00Z"));
    }

    #[test]
    fn blackouts() {
        let w = Window::parse("Mon..Fri 08:00-18:00").unwrap();
        assert_eq!(
            w.end_if_inside(ts("2026-12-02T09:00:00Z"), &utc()),
            Some(ts("2026-12-02T18:00:00Z"))
        );
        assert_eq!(w.end_if_inside(ts("2026-12-05T09:00:00Z"), &utc()), None);
        let night = Window::parse("22:00-06:00").unwrap();
        assert_eq!(
            night.end_if_inside(ts("2026-12-02T03:00:00Z"), &utc()),
            Some(ts("2026-12-02T06:00:00Z"))
        );
        assert_eq!(
            night.end_if_inside(ts("2026-12-02T07:00:00Z"), &utc()),
            None
        );
        assert!(Window::parse("08:00").is_err());
        assert!(Window::parse("08:00-08:00").is_err());
    }

    #[test]
    fn missed_slots_make_one_run_and_failures_back_off() {
        let s = Schedule {
            every: Some(Duration::from_secs(3600)),
            ..Schedule::default()
        };
        let mut p = Past {
            created_ns: ns("2026-12-02T00:00:00Z"),
            ..Past::default()
        };
        assert_eq!(
            s.next_due("j", &p, &utc()),
            Some(p.created_ns),
            "never ran: due now"
        );
        p.last_start_ns = Some(ns("2026-12-02T01:00:00Z"));
        p.last_end_ns = Some(ns("2026-12-02T01:10:00Z"));
        assert_eq!(
            s.next_due("j", &p, &utc()),
            Some(ns("2026-12-02T02:00:00Z"))
        );
        // Asleep from 02:00 to 07:30: one run at wake, then the next an
        // interval later.
        p.last_start_ns = Some(ns("2026-12-02T07:30:00Z"));
        assert_eq!(
            s.next_due("j", &p, &utc()),
            Some(ns("2026-12-02T08:30:00Z"))
        );
        p.failures = 3;
        p.last_end_ns = Some(ns("2026-12-02T07:31:00Z"));
        assert_eq!(
            s.next_due("j", &p, &utc()),
            Some(ns("2026-12-02T07:35:00Z")),
            "third failure: four minutes"
        );
        p.failures = 12;
        assert_eq!(
            s.next_due("j", &p, &utc()),
            Some(ns("2026-12-02T08:30:00Z")),
            "never later than the interval"
        );
        let cal = Schedule {
            at: vec![Calendar::parse("02:30").unwrap()],
            ..Schedule::default()
        };
        let p = Past {
            created_ns: ns("2026-11-01T00:00:00Z"),
            last_start_ns: Some(ns("2026-11-28T02:30:00Z")),
            last_end_ns: Some(ns("2026-11-28T02:40:00Z")),
            failures: 0,
        };
        // Off for four nights: due at the first missed slot, so at wake.
        assert_eq!(
            cal.next_due("j", &p, &utc()),
            Some(ns("2026-11-29T02:30:00Z"))
        );
        assert_eq!(
            cal.default_overdue(ns("2026-12-02T00:00:00Z"), &utc()),
            Some(Duration::from_secs(2 * 86_400 + 3600))
        );
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        let s = Schedule {
            every: Some(Duration::from_secs(3600)),
            jitter: Duration::from_secs(600),
            ..Schedule::default()
        };
        let p = Past {
            created_ns: 0,
            last_start_ns: Some(0),
            ..Past::default()
        };
        let a = s.next_due("home", &p, &utc()).unwrap();
        assert_eq!(a, s.next_due("home", &p, &utc()).unwrap());
        assert!((3600e9 as i64..4200e9 as i64).contains(&a));
    }
}
