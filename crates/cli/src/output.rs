//! Rendering for people: sizes, times, progress bars, tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_engine::archiver::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use cairn_maint::units::human as size;

pub use cairn_maint::times::{rfc3339, utc as time};

/// A progress bar fed from engine counters by a background thread.
pub struct Bar {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Bar {
    /// Starts drawing; `label` is e.g. "backup".
    pub fn start(progress: Arc<Progress>, label: &'static str, enabled: bool) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Bar { stop, handle: None };
        }
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}\n{msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb.set_prefix(label);
            let start = std::time::Instant::now();
            while !s2.load(Ordering::Relaxed) {
                let files = progress.files.load(Ordering::Relaxed);
                let bytes = progress.bytes.load(Ordering::Relaxed);
                if progress.scan_done.load(Ordering::Relaxed)
                    || progress.total_bytes.load(Ordering::Relaxed) > 0
                {
                    pb.set_length(progress.total_bytes.load(Ordering::Relaxed).max(bytes));
                }
                pb.set_position(bytes);
                let total_files = progress.total_files.load(Ordering::Relaxed);
                let cur = progress
                    .current
                    .lock()
                    .map(|c| c.clone())
                    .unwrap_or_default();
                let added = progress.added.load(Ordering::Relaxed);
                let files_s = if total_files > 0 {
                    format!("{files}/{total_files} files")
                } else {
                    format!("{files} files")
                };
                let _ = start;
                pb.set_message(format!(
                    "{files_s}, {} added  {}",
                    size(added),
                    shorten(&cur, 60)
                ));
                std::thread::sleep(Duration::from_millis(150));
            }
            pb.finish_and_clear();
        });
        Bar {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and erases the bar.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn shorten(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= n {
        s.to_string()
    } else {
        let tail: String = chars[chars.len() - (n - 1)..].iter().collect();
        format!("…{tail}")
    }
}

/// Prints a JSON document on stdout.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A Ctrl-C flag: the first SIGINT/SIGTERM asks for a clean stop, a second
/// one exits at once.
pub fn cancel_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(
            super::time(1_700_000_000_000_000_000),
            "2023-11-14 22:13:20"
        );
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::time(-1), "1969-12-31 23:59:59");
        // 2024-02-29 13:05:09.5 UTC.
        let ns = (1_709_164_800 + 13 * 3600 + 5 * 60 + 9) * 1_000_000_000 + 500_000_000;
        assert_eq!(super::time(ns), "2024-02-29 13:05:09");
        assert_eq!(super::rfc3339(ns), "2024-02-29T13:05:09Z");
    }
}
