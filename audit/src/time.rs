//! Timestamps of audit records. Input: nanoseconds since the Unix epoch (or text); output: the
//! fixed-width RFC 3339 UTC form `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (30 bytes). Invariant: because
//! the form has a fixed width, byte order equals time order, so the verifier checks monotonic
//! time with a plain byte comparison and never needs a calendar.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length in bytes of a formatted [`Timestamp`].
pub const TIMESTAMP_LEN: usize = 30;

/// A point in time, nanoseconds since 1970-01-01T00:00:00Z (years 1970..=2554).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time (0 if the clock is before 1970).
    pub fn now() -> Timestamp {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp(ns)
    }

    /// Parse the exact 30-byte record form; `None` for anything else.
    pub fn parse_exact(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != TIMESTAMP_LEN {
            return None;
        }
        let seps = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (29, b'Z'),
        ];
        for (i, c) in seps {
            if b.get(i) != Some(&c) {
                return None;
            }
        }
        let num = |from: usize, to: usize| -> Option<u64> {
            let mut v = 0u64;
            for &d in b.get(from..to)? {
                if !d.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + u64::from(d - b'0');
            }
            Some(v)
        };
        let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (h, mi, sec, ns) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 29)?);
        from_parts(y, mo, d, h, mi, sec, ns)
    }

    /// Parse a user-supplied bound for `show --since/--until`: `YYYY-MM-DD`,
    /// `YYYY-MM-DDTHH:MM:SS[.frac]Z`, or an integer number of seconds since the epoch.
    pub fn parse_loose(s: &str) -> Option<Timestamp> {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            return s
                .parse::<u64>()
                .ok()?
                .checked_mul(1_000_000_000)
                .map(Timestamp);
        }
        if s.len() == 10 {
            return Timestamp::parse_exact(&format!("{s}T00:00:00.000000000Z"));
        }
        let body = s.strip_suffix('Z')?;
        let (main, frac) = match body.split_once('.') {
            Some((m, f)) => (m, f),
            None => (body, ""),
        };
        if frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Timestamp::parse_exact(&format!("{main}.{frac:0<9}Z"))
    }
}

fn from_parts(y: u64, mo: u64, d: u64, h: u64, mi: u64, s: u64, ns: u64) -> Option<Timestamp> {
    if !(1970..=2554).contains(&y)
        || !(1..=12).contains(&mo)
        || d < 1
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > *mdays.get(usize::try_from(mo - 1).ok()?)? {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + s)?;
    secs.checked_mul(1_000_000_000)?
        .checked_add(ns)
        .map(Timestamp)
}

// Howard Hinnant's days_from_civil, restricted to years >= 1970 (no negative eras).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: u64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0 % 1_000_000_000;
        let secs = self.0 / 1_000_000_000;
        let (y, mo, d) = civil_from_days(secs / 86_400);
        let rem = secs % 86_400;
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ns:09}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_bytewise() {
        let samples = [
            0u64,
            1,
            951_782_400_123_456_789,
            1_764_110_000_000_000_000,
            4_102_444_800_999_999_999,
        ];
        let mut prev = String::new();
        for ns in samples {
            let s = Timestamp(ns).to_string();
            assert_eq!(s.len(), TIMESTAMP_LEN);
            assert_eq!(Timestamp::parse_exact(&s), Some(Timestamp(ns)), "{s}");
            assert!(s > prev);
            prev = s;
        }
        assert_eq!(
            Timestamp(951_782_400_000_000_000).to_string(),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "2026-02-30T00:00:00.000000000Z",
            "2026-01-01 00:00:00.000000000Z",
            "2026-01-01T00:00:00Z",
            "1969-12-31T23:59:59.000000000Z",
        ] {
            assert_eq!(Timestamp::parse_exact(bad), None, "{bad}");
        }
        assert_eq!(
            Timestamp::parse_loose("2026-01-01"),
            Timestamp::parse_exact("2026-01-01T00:00:00.000000000Z")
        );
        assert_eq!(
            Timestamp::parse_loose("2026-01-01T01:02:03.5Z"),
            Timestamp::parse_exact("2026-01-01T01:02:03.500000000Z")
        );
        assert_eq!(
            Timestamp::parse_loose("10"),
            Some(Timestamp(10_000_000_000))
        );
    }
}
