//! Sizes and durations with units.
//!
//! Sizes: an integer (bytes) or `"<number><unit>"` with unit B, KiB, MiB, GiB, TiB (powers
//! of 1024) or KB, MB, GB, TB (powers of 1000); the number may have a fraction
//! (`"1.5GiB"`) as long as the result is a whole number of bytes. Durations: an integer
//! (seconds) or one or more `<integer><unit>` parts with unit ms, s, m, h, d (`"1h30m"`).
//! Invariants: results fit in u64; zero and negative values are reported by the caller,
//! which knows whether zero makes sense.

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// Parses a size string into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim_start();
    if num.is_empty() {
        return Err(if s.starts_with('-') { "negative size".into() } else { format!("`{s}` does not start with a number") });
    }
    let Some(&(_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
        let hint = match unit {
            "" => "add a unit".to_string(),
            "K" | "k" | "M" | "m" | "G" | "g" | "T" | "t" => format!("`{unit}` is ambiguous: write {}iB (binary) or {}B (decimal)", unit.to_ascii_uppercase(), unit.to_ascii_uppercase()),
            "kb" | "kib" | "mb" | "mib" | "gb" | "gib" => "units are case-sensitive: KiB, MiB, GiB, KB, MB, GB".to_string(),
            _ => format!("unknown unit `{unit}`"),
        };
        return Err(format!("{hint}; units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB"));
    };
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err(format!("`{num}` is not a number"));
    }
    let whole: u64 = whole.parse().map_err(|_| format!("`{num}` is too large"))?;
    let mut bytes = whole.checked_mul(mult).ok_or("size does not fit in 64 bits")?;
    if !frac.is_empty() {
        if frac.len() > 12 {
            return Err("too many decimal places".into());
        }
        let f: u64 = frac.parse().map_err(|_| format!("`{num}` is not a number"))?;
        let scale = 10u64.pow(u32::try_from(frac.len()).unwrap_or(12));
        let num = u128::from(f) * u128::from(mult);
        if num % u128::from(scale) != 0 {
            return Err(format!("{s} is not a whole number of bytes"));
        }
        let extra = u64::try_from(num / u128::from(scale)).map_err(|_| "size does not fit in 64 bits")?;
        bytes = bytes.checked_add(extra).ok_or("size does not fit in 64 bits")?;
    }
    Ok(bytes)
}

/// Parses a duration string into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("negative duration".into());
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (num, after) = rest.split_at(n);
        if num.is_empty() {
            return Err(format!("expected a number at `{rest}`"));
        }
        let u = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(u);
        let mult: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{num}` needs a unit: ms, s, m, h or d")),
            other => return Err(format!("unknown unit `{other}`; units: ms, s, m, h, d")),
        };
        let v: u64 = num.parse().map_err(|_| "duration too large".to_string())?;
        total = v
            .checked_mul(mult)
            .and_then(|x| total.checked_add(x))
            .ok_or("duration too large")?;
        rest = next;
    }
    Ok(total)
}

pub fn format_size(bytes: u64) -> String {
    for (unit, mult) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    format!("{bytes}B")
}

pub fn format_duration_ms(ms: u64) -> String {
    let mut parts = Vec::new();
    let mut rest = ms;
    for (unit, mult) in [("d", 86_400_000u64), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if rest >= mult {
            parts.push(format!("{}{unit}", rest / mult));
            rest %= mult;
        }
    }
    if rest > 0 || parts.is_empty() {
        parts.push(format!("{rest}ms"));
    }
    parts.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10B"), Ok(10));
        assert!(parse_size("512M").unwrap_err().contains("ambiguous"));
        assert!(parse_size("512mib").unwrap_err().contains("case"));
        assert!(parse_size("-1MiB").unwrap_err().contains("negative"));
        assert!(parse_size("99999999999TiB").is_err());
        assert!(parse_size("0.1B").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("30").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert!(parse_duration_ms("-5s").is_err());
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_size(512 << 20), "512MiB");
    }
}
