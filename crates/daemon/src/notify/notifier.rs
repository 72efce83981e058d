//! The queue between the scheduler and the receivers: one background
//! thread per channel, so a dead webhook that takes a minute of retries
//! delays neither the scheduler nor the email about the same failure.
//!
//! Each channel's thread takes its events in order, applies the rate
//! limit, delivers with a bounded number of retries, and logs what it had
//! to give up. Memory is bounded: at most [`MAX_QUEUED`] events wait per
//! channel, and a held-back summary lists at most a fixed number.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::limit::{Limiter, RateLimit};
use super::render::{HeldBack, Message};
use super::{Channel, Event, deliver_message};

/// Events waiting per channel past which new ones are dropped (and
/// logged): a receiver dead for hours must not grow the daemon's memory.
const MAX_QUEUED: usize = 1000;

/// Where the notifier's own problems go (a lost alert, a retry): a line
/// without a timestamp, starting with `notify:`.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// A channel and the jobs whose events it gets.
#[derive(Clone, Debug)]
pub struct Route {
    /// Where to deliver.
    pub channel: Channel,
    /// The jobs it is for; empty means all of them.
    pub jobs: Vec<String>,
}

impl Route {
    /// A route for every job.
    pub fn new(channel: Channel) -> Route {
        Route {
            channel,
            jobs: Vec::new(),
        }
    }

    /// Whether `event` goes this way: a job it is for, and an alert, or
    /// any event for a healthchecks channel (the pings).
    pub fn accepts(&self, event: &Event) -> bool {
        (self.jobs.is_empty() || self.jobs.contains(&event.job)) && self.channel.takes(event.kind)
    }
}

/// How often a failed delivery is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait after the first failure; each later wait doubles.
    pub first_delay: Duration,
}

impl Default for Retry {
    /// 3 tries over a minute (waits of 20 s and 40 s): enough for a
    /// receiver that restarts, short enough that later alerts are not
    /// held behind a dead one for long.
    fn default() -> Retry {
        Retry {
            attempts: 3,
            first_delay: Duration::from_secs(20),
        }
    }
}

impl Retry {
    /// The wait after failed attempt `n` (from 1).
    fn delay(&self, n: u32) -> Duration {
        self.first_delay
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
    }
}

/// Everything a [`Notifier`] can be told besides its routes.
#[derive(Clone)]
pub struct Options {
    /// The rate limit of each channel (healthchecks pings are exempt).
    pub limit: RateLimit,
    /// The retries of a failed delivery.
    pub retry: Retry,
    /// Where lost alerts and retries are logged.
    pub log: Log,
}

impl Default for Options {
    /// The default limit and retries, logging to stderr.
    fn default() -> Options {
        Options {
            limit: RateLimit::default(),
            retry: Retry::default(),
            log: Arc::new(|line| eprintln!("cairn daemon: {line}")),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("limit", &self.limit)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Delivers events in the background, per channel, rate-limited and
/// retried; see the [module](super) documentation.
///
/// Dropping it stops the threads after the delivery each is making; call
/// [`Notifier::flush`] first to let the queue drain.
pub struct Notifier {
    routes: Vec<Route>,
    shared: Arc<Shared>,
    log: Log,
}

/// What the caller and the channel threads share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the threads: an event queued, a flush, the stop.
    wake: Condvar,
    /// Wakes [`Notifier::flush`]: a thread went idle.
    idle: Condvar,
}

/// The queues, under one lock (there are few channels and the work done
/// under it is small).
struct State {
    lanes: Vec<Lane>,
    stop: bool,
    /// Flushes waiting: held-back summaries go out at once meanwhile.
    flushing: usize,
}

/// One channel's queue.
struct Lane {
    queue: VecDeque<Event>,
    /// A delivery is under way.
    busy: bool,
    /// None for healthchecks, which are not limited.
    limiter: Option<Limiter>,
    /// Its thread started.
    alive: bool,
}

impl Lane {
    /// Nothing queued, under way or held back.
    fn is_idle(&self) -> bool {
        !self.alive
            || (self.queue.is_empty()
                && !self.busy
                && !self.limiter.as_ref().is_some_and(Limiter::is_holding))
    }
}

impl Shared {
    /// The state, even if a thread panicked holding it: the queues are
    /// still consistent, each change being a single push or pop.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a channel thread delivers next.
enum Work {
    Event(Event),
    Summary(HeldBack),
}

impl Work {
    fn message(&self) -> Message<'_> {
        match self {
            Work::Event(e) => Message::Event(e),
            Work::Summary(h) => Message::HeldBack(h),
        }
    }

    /// What it is, for the log.
    fn describe(&self) -> String {
        match self {
            Work::Event(e) => format!("the {} event of job {:?}", e.kind, e.job),
            Work::Summary(h) => format!("the summary of {} held-back alerts", h.total),
        }
    }
}

impl Notifier {
    /// Starts one delivery thread per route, with the default retries
    /// and logging to stderr.
    pub fn new(channels: Vec<Route>, limit: RateLimit) -> Notifier {
        Notifier::with_options(
            channels,
            Options {
                limit,
                ..Options::default()
            },
        )
    }

    /// [`Notifier::new`] with every option.
    pub fn with_options(routes: Vec<Route>, options: Options) -> Notifier {
        let lanes = routes
            .iter()
            .map(|r| Lane {
                queue: VecDeque::new(),
                busy: false,
                limiter: r.channel.is_limited().then(|| Limiter::new(options.limit)),
                alive: false,
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lanes,
                stop: false,
                flushing: 0,
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        for (i, route) in routes.iter().enumerate() {
            let (s, channel, opts) = (shared.clone(), route.channel.clone(), options.clone());
            let started = std::thread::Builder::new()
                .name(format!("notify-{i}"))
                .spawn(move || work(&s, i, &channel, &opts));
            match started {
                Ok(_) => shared.lock().lanes[i].alive = true,
                Err(e) => (options.log)(&format!(
                    "notify: {}: cannot start its thread, nothing will be sent there: {e}",
                    route.channel
                )),
            }
        }
        Notifier {
            routes,
            shared,
            log: options.log,
        }
    }

    /// Queues the event for every route that takes it and returns at
    /// once.
    pub fn send(&self, event: Event) {
        let mut full = Vec::new();
        {
            let mut st = self.shared.lock();
            for (route, lane) in self.routes.iter().zip(st.lanes.iter_mut()) {
                if !lane.alive || !route.accepts(&event) {
                    continue;
                }
                if lane.queue.len() >= MAX_QUEUED {
                    full.push(&route.channel);
                    continue;
                }
                lane.queue.push_back(event.clone());
            }
        }
        self.shared.wake.notify_all();
        for channel in full {
            (self.log)(&format!(
                "notify: {channel}: {MAX_QUEUED} events are waiting already; the {} event of job {:?} is dropped",
                event.kind, event.job
            ));
        }
    }

    /// Waits until every queued event is delivered or given up, and sends
    /// what the rate limit holds back at once rather than when its window
    /// opens (at shutdown it would be lost). False if `timeout` passed
    /// first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        st.flushing += 1;
        self.shared.wake.notify_all();
        let done = loop {
            if st.lanes.iter().all(Lane::is_idle) {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            st = self
                .shared
                .idle
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        st.flushing -= 1;
        done
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.stop = true;
        let left: usize = st
            .lanes
            .iter()
            .map(|l| l.queue.len() + l.limiter.as_ref().map_or(0, Limiter::held_total))
            .sum();
        drop(st);
        self.shared.wake.notify_all();
        if left > 0 {
            (self.log)(&format!(
                "notify: stopping with {left} notifications not delivered"
            ));
        }
    }
}

/// One channel's thread: takes its events in order until the stop.
fn work(shared: &Shared, i: usize, channel: &Channel, opts: &Options) {
    let mut st = shared.lock();
    loop {
        if st.stop {
            return;
        }
        let flushing = st.flushing > 0;
        let now = Instant::now();
        let lane = &mut st.lanes[i];
        let next = if let Some(event) = lane.queue.pop_front() {
            let admitted = lane.limiter.as_mut().is_none_or(|l| l.admit(&event, now));
            if !admitted {
                // Held back: its summary comes later.
                continue;
            }
            Work::Event(event)
        } else if let Some(h) = lane
            .limiter
            .as_mut()
            .and_then(|l| l.summary(now, now_ns(), flushing))
        {
            Work::Summary(h)
        } else {
            // Nothing to do before the window has room for a summary,
            // if anything is held back.
            let wait = match lane.limiter.as_mut() {
                Some(l) if l.is_holding() => Some(
                    l.next_slot(now)
                        .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now)),
                ),
                _ => None,
            };
            shared.idle.notify_all();
            st = match wait {
                Some(d) => {
                    shared
                        .wake
                        .wait_timeout(st, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => shared.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
            continue;
        };
        lane.busy = true;
        drop(st);
        deliver_retrying(shared, channel, opts, &next);
        st = shared.lock();
        st.lanes[i].busy = false;
    }
}

/// Delivers, retrying with backoff, and logs a retry or the loss.
fn deliver_retrying(shared: &Shared, channel: &Channel, opts: &Options, work: &Work) {
    let attempts = opts.retry.attempts.max(1);
    for n in 1..=attempts {
        let e = match deliver_message(channel, work.message()) {
            Ok(()) => return,
            Err(e) => e,
        };
        if !e.is_retryable() {
            (opts.log)(&format!(
                "notify: {} is lost: {e} (not retried: it would fail the same way)",
                work.describe()
            ));
            return;
        }
        if n == attempts {
            (opts.log)(&format!(
                "notify: {} is lost after {attempts} attempts: {e}",
                work.describe()
            ));
            return;
        }
        let delay = opts.retry.delay(n);
        (opts.log)(&format!(
            "notify: {} not delivered (attempt {n} of {attempts}), retrying in {:.1} s: {e}",
            work.describe(),
            delay.as_secs_f64()
        ));
        if !pause(shared, delay) {
            (opts.log)(&format!(
                "notify: {} is lost: the daemon is stopping",
                work.describe()
            ));
            return;
        }
    }
}

/// Waits `d`, or less if the notifier stops (then false).
fn pause(shared: &Shared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut st = shared.lock();
    loop {
        if st.stop {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        st = shared
            .wake
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Now, in ns since the epoch.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double() {
        let r = Retry::default();
        assert_eq!(r.delay(1), Duration::from_secs(20));
        assert_eq!(r.delay(2), Duration::from_secs(40));
        assert_eq!(
            r.delay(40),
            Duration::from_secs(20).saturating_mul(u32::MAX)
        );
    }
}
