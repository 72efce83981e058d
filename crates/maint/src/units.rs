//! Sizes and shares as users write them in flags and config files, shared
//! by the command line and the daemon's config so both accept the same
//! spellings.

/// Parses `32MiB`, `4M`, `1G`, `1048576`; units are powers of two.
pub fn size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 32MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?}; use KiB, MiB, GiB or TiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A byte count for people: `512 B`, `1.5 GiB`.
pub fn human(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Parses `10%`, `0.1`, `5 %` into a share between 0 and 1.
pub fn share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a share like 10%"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} must be between 0% and 100%"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_and_shares() {
        assert_eq!(super::size("32MiB"), Ok(32 << 20));
        assert_eq!(super::size("512MiB"), Ok(512 << 20));
        assert_eq!(super::size("7"), Ok(7));
        assert!(
            super::size("99999999999999G")
                .unwrap_err()
                .contains("too large")
        );
        assert!(super::size("3 parsecs").is_err());
        assert_eq!(super::human(512), "512 B");
        assert_eq!(super::human(3 << 29), "1.5 GiB");
        assert_eq!(super::share("10%"), Ok(0.1));
        assert_eq!(super::share("0.25"), Ok(0.25));
        assert!(super::share("150%").is_err());
    }
}
