//! Times as people and programs read them, in one place: the command
//! line, the box's status page and its token list all say a time the same
//! way.

use jiff::Timestamp;

fn at(ns: i64) -> Option<Timestamp> {
    Timestamp::from_second(ns.div_euclid(1_000_000_000)).ok()
}

/// `2024-02-29 13:05:09`, UTC: tables on a terminal.
pub fn utc(ns: i64) -> String {
    at(ns)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ns.to_string())
}

/// `2024-02-29T13:05:09Z` (RFC 3339, UTC): JSON and logs.
pub fn rfc3339(ns: i64) -> String {
    at(ns)
        .map(|t| t.to_string())
        .unwrap_or_else(|| ns.to_string())
}

/// `2024-02-29 14:05 CET`, in this machine's time zone: the status page.
pub fn local(ns: i64) -> String {
    at(ns)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        let ns = 1_709_211_909_123_456_789;
        assert_eq!(super::utc(ns), "2024-02-29 13:05:09");
        assert_eq!(super::rfc3339(ns), "2024-02-29T13:05:09Z");
        assert!(super::local(ns).starts_with("2024-02-29"));
    }
}
