//! What a forge's REST answer says about the next page and about waiting
//! before the next request, for listing every repository of an owner.
//!
//! GitHub and Gitea/Forgejo link the next page in a `Link` header
//! (RFC 8288); GitLab also sends `x-next-page`. Rate limits show as a 429
//! or 403 with `Retry-After` (seconds or an HTTP date), or as
//! `x-ratelimit-remaining: 0` with `x-ratelimit-reset` (Unix seconds;
//! GitLab spells them `ratelimit-*`). A listing that ignores them gets the
//! token blocked for an hour, so every answer goes through [`wait_before`].
//! Header values come from the network: a wait is never longer than
//! [`MAX_WAIT`], whatever a header claims.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest wait any header can impose; GitHub's primary limit resets
/// hourly, so a longer one is a broken or hostile answer.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The wait after a 429 (or a rate-limit 403) that says nothing more:
/// GitHub asks for at least a minute before retrying a secondary limit.
pub const BARE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The URL of the page marked `rel="next"` in a `Link` header, if any.
pub fn next_link(link: &str) -> Option<String> {
    // Entries are `<url>; param; param`, separated by commas; a URL may
    // itself hold commas, so split on the angle brackets first.
    let mut rest = link;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let url = &after[..close];
        let params_end = after[close..]
            .find('<')
            .map(|i| close + i)
            .unwrap_or(after.len());
        let params = &after[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            let Some(v) = p.strip_prefix("rel=") else {
                return false;
            };
            v.trim_matches('"')
                .split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(url.to_string());
        }
        rest = &after[params_end..];
    }
    None
}

/// GitLab's `x-next-page`: the next page number, absent or empty on the
/// last page.
pub fn gitlab_next_page(value: Option<&str>) -> Option<u32> {
    value?.trim().parse().ok().filter(|&n| n > 0)
}

/// The headers of an answer that bear on rate limits, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct Limits<'a> {
    /// The HTTP status code.
    pub status: u16,
    /// `Retry-After`: seconds, or an HTTP date.
    pub retry_after: Option<&'a str>,
    /// `x-ratelimit-remaining` or GitLab's `ratelimit-remaining`.
    pub remaining: Option<&'a str>,
    /// `x-ratelimit-reset` or GitLab's `ratelimit-reset`: Unix seconds.
    pub reset: Option<&'a str>,
}

/// How long to wait before the next request, `None` for not at all. A
/// limited answer (429, or 403 with the limit spent or a `Retry-After`) is
/// to be retried after the wait; a 2xx answer with the limit spent is
/// kept, and the wait holds the next request. Any other 403 is a refusal
/// (a token without access), unless its body names GitHub's secondary
/// limit, which only the caller sees.
pub fn wait_before(l: &Limits<'_>, now: SystemTime) -> Option<Duration> {
    let spent = l.remaining.map(str::trim) == Some("0");
    let limited = l.status == 429 || (l.status == 403 && (spent || l.retry_after.is_some()));
    if !limited && !spent {
        return None;
    }
    let wait = retry_after(l.retry_after, now)
        .or_else(|| spent.then(|| until_reset(l.reset, now)).flatten())
        .unwrap_or(BARE_LIMIT_WAIT);
    Some(wait.min(MAX_WAIT))
}

/// `Retry-After`: delay seconds, or an HTTP date.
fn retry_after(value: Option<&str>, now: SystemTime) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let at = SystemTime::try_from(at).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait until a reset given in Unix seconds (plus a second, as the
/// forge's clock and ours differ by up to that).
fn until_reset(value: Option<&str>, now: SystemTime) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    let Some(at) = UNIX_EPOCH.checked_add(Duration::from_secs(secs)) else {
        return Some(MAX_WAIT);
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO) + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_page_links_as_github_and_gitea_send_them() {
        let gh = r#"<https://api.github.com/user/61721/repos?page=2>; rel="next", <https://api.github.com/user/61721/repos?page=4>; rel="last""#;
        assert_eq!(
            next_link(gh).as_deref(),
            Some("https://api.github.com/user/61721/repos?page=2")
        );
        // Not first, several relations, a comma inside the URL, spaces.
        let odd =
            r#"<https://f/x?page=1>; rel="first" , <https://f/x?a=1,2&page=3> ;rel="prev next""#;
        assert_eq!(next_link(odd).as_deref(), Some("https://f/x?a=1,2&page=3"));
        // The last page: no next.
        let last = r#"<https://f/x?page=1>; rel="first", <https://f/x?page=3>; rel="prev""#;
        assert_eq!(next_link(last), None);
        for junk in [
            "",
            "<",
            "<https://f/x",
            "garbage; rel=next",
            "<u>; rel=\"nextish\"",
        ] {
            assert_eq!(next_link(junk), None, "{junk:?}");
        }
        assert_eq!(next_link("<u>; rel=next").as_deref(), Some("u"));
    }

    #[test]
    fn gitlab_pages() {
        assert_eq!(gitlab_next_page(Some("3")), Some(3));
        assert_eq!(gitlab_next_page(Some("")), None);
        assert_eq!(gitlab_next_page(Some("0")), None);
        assert_eq!(gitlab_next_page(Some("x")), None);
        assert_eq!(gitlab_next_page(None), None);
    }

    #[test]
    fn waits_follow_the_headers_and_are_bounded() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let l = |status, retry_after, remaining, reset| Limits {
            status,
            retry_after,
            remaining,
            reset,
        };
        // Fine: no wait.
        assert_eq!(
            wait_before(&l(200, None, Some("4999"), Some("1700003600")), now),
            None
        );
        // A 403 that is not about limits (a token without access): no wait.
        assert_eq!(wait_before(&l(403, None, Some("10"), None), now), None);
        // Retry-After in seconds, on a 429 and on a 403.
        let secs = Some(Duration::from_secs(30));
        assert_eq!(wait_before(&l(429, Some("30"), None, None), now), secs);
        assert_eq!(wait_before(&l(403, Some(" 30 "), None, None), now), secs);
        // Retry-After as an HTTP date, 90 s from now.
        let date = "Tue, 14 Nov 2023 22:14:50 GMT";
        assert_eq!(
            wait_before(&l(429, Some(date), None, None), now),
            Some(Duration::from_secs(90))
        );
        // The limit spent: until the reset, on an error and on a success.
        let reset = Some(Duration::from_secs(121));
        assert_eq!(
            wait_before(&l(403, None, Some("0"), Some("1700000120")), now),
            reset
        );
        assert_eq!(
            wait_before(&l(200, None, Some("0"), Some("1700000120")), now),
            reset
        );
        // A reset already past: only the second for clock skew.
        assert_eq!(
            wait_before(&l(200, None, Some("0"), Some("1699999000")), now),
            Some(Duration::from_secs(1))
        );
        // A 429 that says nothing more.
        assert_eq!(
            wait_before(&l(429, None, None, None), now),
            Some(BARE_LIMIT_WAIT)
        );
        assert_eq!(
            wait_before(&l(429, Some("soon"), None, None), now),
            Some(BARE_LIMIT_WAIT)
        );
        // Absurd claims are cut to the bound.
        assert_eq!(
            wait_before(&l(429, Some("99999999999"), None, None), now),
            Some(MAX_WAIT)
        );
        assert_eq!(
            wait_before(&l(200, None, Some("0"), Some("99999999999")), now),
            Some(MAX_WAIT)
        );
        assert_eq!(
            wait_before(
                &l(429, Some("Wed, 31 Dec 9000 23:59:59 GMT"), None, None),
                now
            ),
            Some(MAX_WAIT)
        );
        assert_eq!(
            wait_before(&l(429, None, Some("0"), Some("18446744073709551615")), now),
            Some(MAX_WAIT)
        );
    }
}
