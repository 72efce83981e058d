//! Durations as users write them in flags and the server config.

/// Parses `90s`, `30min`, `12h`, `7d`, `2w`, `6mo`, `1y`, and sums like
/// `1d12h`. A bare `m` is refused: restic reads it as months, others as
/// minutes.
pub fn parse(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return Err("empty duration; use e.g. 30d, 12h or 90min".into());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let ulen = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(ulen);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30d, 12h or 90min"))?;
        let secs = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "mo" => 30 * 86_400,
            "y" => 365 * 86_400,
            "m" => {
                return Err(format!("{s:?}: write `min` for minutes or `mo` for months"));
            }
            u => {
                return Err(format!(
                    "{s:?}: unknown unit {u:?}; use s, min, h, d, w, mo or y"
                ));
            }
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = next;
    }
    Ok(std::time::Duration::from_secs(total))
}
