//! Retention policies: which snapshots of a group to keep.
//!
//! The rules are restic's, which users know: `keep-last N` keeps the N
//! newest; `keep-hourly N` keeps the newest snapshot of each of the N most
//! recent hours that have one, and likewise for days, ISO weeks, months
//! and years; `keep-within D` keeps everything newer than D before now;
//! `keep-tag T` keeps every snapshot tagged T. A snapshot kept by any rule
//! is kept. Policies apply to each group on its own, so one source making
//! many snapshots never pushes another group's snapshots out, and
//! protected snapshots are kept whatever the policy says.
//!
//! `keep-within` counts back from the time `forget` runs, not from the
//! newest snapshot: a burst of new snapshots can use up `keep-last` and
//! the calendar buckets, but not a time window.
//!
//! Calendar buckets are computed by the caller (in the user's time zone)
//! and passed in as [`Civil`] times, so this module stays pure.

use std::collections::BTreeMap;

use cairn_format::Id;

/// A policy; every count is a number of snapshots or buckets to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N.
    pub last: Option<u32>,
    /// Keep the newest of each of the N latest hours.
    pub hourly: Option<u32>,
    /// Days.
    pub daily: Option<u32>,
    /// ISO weeks.
    pub weekly: Option<u32>,
    /// Months.
    pub monthly: Option<u32>,
    /// Years.
    pub yearly: Option<u32>,
    /// Keep everything newer than this many nanoseconds before now.
    pub within_ns: Option<i64>,
    /// Keep every snapshot with one of these tags.
    pub tags: Vec<String>,
}

/// Why a policy is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No rule at all: forgetting would remove everything.
    #[error(
        "no retention rule given: name at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within, --keep-tag"
    )]
    Empty,
    /// A count of zero keeps nothing and is almost always a mistake.
    #[error("--keep-{0} 0 keeps nothing: leave the option out, or give a count of 1 or more")]
    Zero(&'static str),
    /// A negative or zero time window.
    #[error("--keep-within must be a positive duration such as 30d or 12h")]
    Within,
    /// An empty tag matches nothing.
    #[error("--keep-tag needs a tag name")]
    EmptyTag,
}

impl Policy {
    /// Refuses policies that cannot be what the user meant.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, n) in self.counts() {
            if n == Some(0) {
                return Err(Error::Zero(name));
            }
        }
        if self.within_ns.is_some_and(|d| d <= 0) {
            return Err(Error::Within);
        }
        if self.tags.iter().any(|t| t.is_empty()) {
            return Err(Error::EmptyTag);
        }
        if self.counts().iter().all(|(_, n)| n.is_none())
            && self.within_ns.is_none()
            && self.tags.is_empty()
        {
            return Err(Error::Empty);
        }
        Ok(())
    }

    fn counts(&self) -> [(&'static str, Option<u32>); 6] {
        [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
    }
}

/// A snapshot's time on the calendar of the user's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Civil {
    /// Calendar year.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// Hour, 0 to 23.
    pub hour: u8,
    /// ISO 8601 week-numbering year (differs from `year` around New Year).
    pub iso_year: i32,
    /// ISO 8601 week, 1 to 53.
    pub iso_week: u8,
}

impl Civil {
    /// A time (ns since the epoch) on the calendar of `tz`: daily and
    /// weekly buckets follow that zone's midnight.
    pub fn in_zone(tz: &jiff::tz::TimeZone, ns: i64) -> Civil {
        let secs = ns.div_euclid(1_000_000_000);
        let offset = jiff::Timestamp::from_second(secs)
            .map(|ts| tz.to_offset(ts).seconds())
            .unwrap_or(0);
        Civil::from_unix(secs, offset)
    }

    /// The civil time of a UTC instant shifted by a fixed offset from UTC.
    /// Callers with a real time zone should compute the fields from it;
    /// this serves UTC and tests.
    pub fn from_unix(secs: i64, offset_secs: i32) -> Civil {
        let t = secs + i64::from(offset_secs);
        let days = t.div_euclid(86_400);
        let hour = (t.rem_euclid(86_400) / 3600) as u8;
        let (year, month, day) = civil_from_days(days);
        // ISO week: the week (Monday first) holding this day's Thursday.
        let weekday = (days + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
        let thursday = days - weekday + 3;
        let (iso_year, _, _) = civil_from_days(thursday);
        let jan1 = days_from_civil(iso_year, 1, 1);
        let iso_week = ((thursday - jan1) / 7 + 1) as u8;
        Civil {
            year,
            month,
            day,
            hour,
            iso_year,
            iso_week,
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(if m <= 2 { y - 1 } else { y });
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A snapshot as retention sees it: only plaintext envelope fields.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Snapshot ID.
    pub id: Id,
    /// Its group.
    pub group: String,
    /// Its time, ns since the epoch (the server's receive time where there
    /// is one).
    pub time_ns: i64,
    /// Its time on the user's calendar.
    pub civil: Civil,
    /// Its tags.
    pub tags: Vec<String>,
    /// Marked with `cairn protect`.
    pub protected: bool,
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Protected with `cairn protect`.
    Protected,
    /// One of the newest N.
    Last,
    /// Newest of its hour.
    Hourly,
    /// Newest of its day.
    Daily,
    /// Newest of its ISO week.
    Weekly,
    /// Newest of its month.
    Monthly,
    /// Newest of its year.
    Yearly,
    /// Inside the `keep-within` window.
    Within,
    /// Carries a kept tag.
    Tag(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Protected => f.write_str("protected"),
            Reason::Last => f.write_str("last"),
            Reason::Hourly => f.write_str("hourly"),
            Reason::Daily => f.write_str("daily"),
            Reason::Weekly => f.write_str("weekly"),
            Reason::Monthly => f.write_str("monthly"),
            Reason::Yearly => f.write_str("yearly"),
            Reason::Within => f.write_str("within"),
            Reason::Tag(t) => write!(f, "tag {t}"),
        }
    }
}

/// The decision for one snapshot.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The snapshot.
    pub candidate: Candidate,
    /// The rules that keep it; empty means it is removed.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// Whether the snapshot stays.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The decisions for one group, newest snapshot first.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// The group.
    pub group: String,
    /// One decision per snapshot, newest first.
    pub decisions: Vec<Decision>,
}

impl GroupPlan {
    /// Whether the policy would leave this group without any snapshot.
    pub fn empties_group(&self) -> bool {
        !self.decisions.is_empty() && self.decisions.iter().all(|d| !d.keep())
    }
}

/// Applies `policy` to each group of `snapshots` on its own; `now_ns` is
/// the time `forget` runs. Groups come out sorted by name.
pub fn plan(policy: &Policy, snapshots: Vec<Candidate>, now_ns: i64) -> Vec<GroupPlan> {
    let mut groups: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(s.group.clone()).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|(group, mut list)| {
            // Newest first; equal times in a fixed order.
            list.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then(b.id.cmp(&a.id)));
            GroupPlan {
                group,
                decisions: plan_group(policy, list, now_ns),
            }
        })
        .collect()
}

fn plan_group(policy: &Policy, list: Vec<Candidate>, now_ns: i64) -> Vec<Decision> {
    type Bucket = fn(&Civil) -> (i32, u8, u8, u8);
    let buckets: [(Option<u32>, Reason, Bucket); 5] = [
        (policy.hourly, Reason::Hourly, |c| {
            (c.year, c.month, c.day, c.hour)
        }),
        (policy.daily, Reason::Daily, |c| (c.year, c.month, c.day, 0)),
        (policy.weekly, Reason::Weekly, |c| {
            (c.iso_year, c.iso_week, 0, 0)
        }),
        (policy.monthly, Reason::Monthly, |c| (c.year, c.month, 0, 0)),
        (policy.yearly, Reason::Yearly, |c| (c.year, 0, 0, 0)),
    ];
    let mut left: Vec<u32> = buckets.iter().map(|b| b.0.unwrap_or(0)).collect();
    let mut last_bucket: Vec<Option<(i32, u8, u8, u8)>> = vec![None; buckets.len()];
    let mut last_left = policy.last.unwrap_or(0);
    let since = policy.within_ns.map(|w| now_ns.saturating_sub(w));
    list.into_iter()
        .map(|c| {
            let mut reasons = Vec::new();
            if c.protected {
                reasons.push(Reason::Protected);
            }
            if last_left > 0 {
                last_left -= 1;
                reasons.push(Reason::Last);
            }
            for (i, (_, reason, key)) in buckets.iter().enumerate() {
                let k = key(&c.civil);
                if left[i] > 0 && last_bucket[i] != Some(k) {
                    left[i] -= 1;
                    last_bucket[i] = Some(k);
                    reasons.push(reason.clone());
                }
            }
            if since.is_some_and(|s| c.time_ns >= s) {
                reasons.push(Reason::Within);
            }
            for t in &policy.tags {
                if c.tags.iter().any(|x| x == t) {
                    reasons.push(Reason::Tag(t.clone()));
                }
            }
            Decision {
                candidate: c,
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 86_400;
    const NS: i64 = 1_000_000_000;

    fn snap(n: u8, group: &str, secs: i64, tags: &[&str]) -> Candidate {
        Candidate {
            id: Id([n; 32]),
            group: group.into(),
            time_ns: secs * NS,
            civil: Civil::from_unix(secs, 0),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            protected: false,
        }
    }

    fn kept(plans: &[GroupPlan], group: &str) -> Vec<u8> {
        let g = plans.iter().find(|p| p.group == group).expect("group");
        g.decisions
            .iter()
            .filter(|d| d.keep())
            .map(|d| d.candidate.id.0[0])
            .collect()
    }

    /// 2026-03-02 00:00:00 UTC, a Monday.
    const T0: i64 = 1_772_409_600;

    #[test]
    fn calendar_fields() {
        let c = Civil::from_unix(T0 + 13 * H + 5, 0);
        assert_eq!((c.year, c.month, c.day, c.hour), (2026, 3, 2, 13));
        assert_eq!((c.iso_year, c.iso_week), (2026, 10));
        // 2027-01-01 is a Friday: it belongs to ISO week 53 of 2026.
        let ny = Civil::from_unix(1_798_761_600, 0);
        assert_eq!((ny.year, ny.month, ny.day), (2027, 1, 1));
        assert_eq!((ny.iso_year, ny.iso_week), (2026, 53));
        // 2024-12-30 is a Monday: ISO week 1 of 2025.
        let c = Civil::from_unix(1_735_516_800, 0);
        assert_eq!(
            (c.year, c.month, c.day, c.iso_year, c.iso_week),
            (2024, 12, 30, 2025, 1)
        );
        // Leap day, and an offset that moves the date.
        let c = Civil::from_unix(1_709_164_800, 0);
        assert_eq!((c.month, c.day), (2, 29));
        let c = Civil::from_unix(T0 - 1, 3600);
        assert_eq!((c.month, c.day, c.hour), (3, 2, 0));
        let c = Civil::from_unix(-1, 0);
        assert_eq!((c.year, c.month, c.day, c.hour), (1969, 12, 31, 23));
        for days in -1000..1000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn last_and_daily() {
        // Three snapshots a day for five days.
        let mut s = Vec::new();
        for day in 0..5 {
            for k in 0..3 {
                let n = (day * 3 + k) as u8;
                s.push(snap(n, "g", T0 + day * D + k * 4 * H, &[]));
            }
        }
        let p = Policy {
            last: Some(2),
            daily: Some(3),
            ..Policy::default()
        };
        p.validate().unwrap();
        let plans = plan(&p, s, T0 + 10 * D);
        // Newest two (14, 13), then the newest of days 4, 3, 2 (14, 11, 8).
        assert_eq!(kept(&plans, "g"), vec![14, 13, 11, 8]);
        let d = &plans[0].decisions;
        assert_eq!(d[0].reasons, vec![Reason::Last, Reason::Daily]);
        assert_eq!(d[1].reasons, vec![Reason::Last]);
        assert!(!d[2].keep());
    }

    #[test]
    fn weekly_monthly_yearly_use_their_buckets() {
        let s = vec![
            snap(1, "g", T0, &[]),           // Mon, week 10, March 2026
            snap(2, "g", T0 + 6 * D, &[]),   // Sun, week 10
            snap(3, "g", T0 + 7 * D, &[]),   // Mon, week 11
            snap(4, "g", T0 - D, &[]),       // Sun 1 March, week 9
            snap(5, "g", T0 - 2 * D, &[]),   // 28 February
            snap(6, "g", T0 - 400 * D, &[]), // 2025
        ];
        let w = plan(
            &Policy {
                weekly: Some(10),
                ..Policy::default()
            },
            s.clone(),
            0,
        );
        assert_eq!(kept(&w, "g"), vec![3, 2, 4, 6]);
        let m = plan(
            &Policy {
                monthly: Some(2),
                ..Policy::default()
            },
            s.clone(),
            0,
        );
        assert_eq!(kept(&m, "g"), vec![3, 5]);
        let y = plan(
            &Policy {
                yearly: Some(5),
                ..Policy::default()
            },
            s.clone(),
            0,
        );
        assert_eq!(kept(&y, "g"), vec![3, 6]);
        let h = plan(
            &Policy {
                hourly: Some(3),
                ..Policy::default()
            },
            s,
            0,
        );
        assert_eq!(kept(&h, "g"), vec![3, 2, 1]);
    }

    #[test]
    fn within_counts_from_now_so_a_burst_cannot_age_out_old_snapshots() {
        let mut s = vec![snap(1, "g", T0, &[]), snap(2, "g", T0 - 20 * D, &[])];
        // A burst of 50 new snapshots, a minute apart.
        for i in 0..50u8 {
            s.push(snap(100 + i, "g", T0 + D + i64::from(i) * 60, &[]));
        }
        let p = Policy {
            last: Some(5),
            within_ns: Some(30 * D * NS),
            ..Policy::default()
        };
        let plans = plan(&p, s, (T0 + 2 * D) * NS);
        let k = kept(&plans, "g");
        assert!(k.contains(&1) && k.contains(&2), "{k:?}");
        assert_eq!(k.len(), 52);
        // Without the window, keep-last alone is used up by the burst.
        let p = Policy {
            last: Some(5),
            ..Policy::default()
        };
        let k = kept(
            &plan(
                &p,
                vec![
                    snap(1, "g", T0, &[]),
                    snap(100, "g", T0 + D, &[]),
                    snap(101, "g", T0 + D + 60, &[]),
                ],
                0,
            ),
            "g",
        );
        assert_eq!(k, vec![101, 100, 1]);
    }

    #[test]
    fn groups_are_independent_and_tags_and_protection_keep() {
        let mut s = vec![snap(1, "home", T0, &[]), snap(2, "home", T0 - D, &["keep"])];
        for i in 0..30u8 {
            s.push(snap(10 + i, "flood", T0 + i64::from(i), &[]));
        }
        let mut old = snap(3, "home", T0 - 5 * D, &[]);
        old.protected = true;
        s.push(old);
        s.push(snap(4, "home", T0 - 6 * D, &[]));
        let p = Policy {
            last: Some(1),
            tags: vec!["keep".into()],
            ..Policy::default()
        };
        let plans = plan(&p, s, 0);
        assert_eq!(kept(&plans, "home"), vec![1, 2, 3]);
        assert_eq!(kept(&plans, "flood"), vec![39]);
        let home = plans.iter().find(|g| g.group == "home").unwrap();
        assert_eq!(home.decisions[1].reasons, vec![Reason::Tag("keep".into())]);
        assert_eq!(home.decisions[2].reasons, vec![Reason::Protected]);
        assert!(!home.empties_group());
    }

    #[test]
    fn policy_that_removes_everything_is_flagged() {
        let plans = plan(
            &Policy {
                tags: vec!["nope".into()],
                ..Policy::default()
            },
            vec![snap(1, "g", T0, &[])],
            0,
        );
        assert!(plans[0].empties_group());
    }

    #[test]
    fn bad_policies_are_refused() {
        assert_eq!(Policy::default().validate(), Err(Error::Empty));
        assert_eq!(
            Policy {
                daily: Some(0),
                ..Policy::default()
            }
            .validate(),
            Err(Error::Zero("daily"))
        );
        assert_eq!(
            Policy {
                within_ns: Some(0),
                ..Policy::default()
            }
            .validate(),
            Err(Error::Within)
        );
        assert_eq!(
            Policy {
                tags: vec![String::new()],
                ..Policy::default()
            }
            .validate(),
            Err(Error::EmptyTag)
        );
        assert!(Error::Empty.to_string().contains("--keep-daily"));
    }

    proptest::proptest! {
        /// Each count rule keeps at most its count, the newest snapshot of
        /// a group is kept by any count rule, and planning is deterministic.
        #[test]
        fn counts_bound_what_they_keep(times in proptest::collection::vec(0i64..400 * D, 1..60), n in 1u32..8) {
            let s: Vec<Candidate> = times.iter().enumerate().map(|(i, &t)| snap(i as u8, "g", T0 + t, &[])).collect();
            for p in [
                Policy { last: Some(n), ..Policy::default() },
                Policy { daily: Some(n), ..Policy::default() },
                Policy { weekly: Some(n), ..Policy::default() },
                Policy { monthly: Some(n), ..Policy::default() },
            ] {
                let a = plan(&p, s.clone(), 0);
                let k = kept(&a, "g");
                proptest::prop_assert!(k.len() as u32 <= n);
                proptest::prop_assert!(a[0].decisions[0].keep());
                let b = plan(&p, s.iter().rev().cloned().collect(), 0);
                proptest::prop_assert_eq!(k, kept(&b, "g"));
            }
        }
    }
}
