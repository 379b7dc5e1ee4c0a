//! Identifiers of memories and collections, and timestamps.
//!
//! Ids are ULIDs: 48 bits of creation time in milliseconds and 80 random bits, written as
//! 26 Crockford base32 characters. They sort by creation time, which keeps redb's B-trees
//! append-mostly.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use ulid::Ulid;

/// `id`, or the id right after the last one this process made if that is in the same
/// millisecond and not before it.
fn monotonic(id: u128) -> u128 {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = next_after(*last, id);
    *last = id;
    id
}

/// `fresh`, or `last + 1` when `last` is of the same millisecond (the top 48 bits) and
/// not below it, and its 80 random bits are not all ones.
fn next_after(last: u128, fresh: u128) -> u128 {
    const RANDOM: u128 = (1 << 80) - 1;
    if fresh >> 80 == last >> 80 && fresh <= last && last & RANDOM != RANDOM {
        last + 1
    } else {
        fresh
    }
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u128);

        impl $name {
            /// A fresh id for something created at `now`. Ids made in one process in the
            /// same millisecond follow each other (the order of writing, e.g. of the notes
            /// of one import), like any ids made later.
            pub fn new(now: Timestamp) -> $name {
                let mut random = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut random);
                let ms = u64::try_from(now.as_millis()).unwrap_or(0);
                $name(monotonic(Ulid::from_parts(ms, u128::from_le_bytes(random)).0))
            }

            /// The id as a 128-bit integer (its on-disk key).
            pub fn to_u128(self) -> u128 {
                self.0
            }

            /// The id held in a 128-bit integer.
            pub fn from_u128(value: u128) -> $name {
                $name(value)
            }

            /// The 16 bytes of the id, big-endian.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&Ulid(self.0), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), Ulid(self.0))
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<$name, ParseIdError> {
                if s.len() != ulid::ULID_LEN {
                    return Err(ParseIdError {
                        what: $what,
                        input: truncate_for_message(s),
                        reason: "expected 26 characters",
                    });
                }
                Ulid::from_string(s).map(|u| $name(u.0)).map_err(|_| ParseIdError {
                    what: $what,
                    input: truncate_for_message(s),
                    reason: "expected Crockford base32 (0-9, A-Z without I, L, O, U)",
                })
            }
        }
    };
}

ulid_id!(
    /// The id of a memory.
    MemoryId,
    "memory id"
);
ulid_id!(
    /// The id of a collection.
    CollectionId,
    "collection id"
);

fn truncate_for_message(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {what}: {reason}")]
pub struct ParseIdError {
    what: &'static str,
    input: String,
    reason: &'static str,
}

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(millis)
    }

    /// The time `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// UTC midnight of a Gregorian date (`month` 1–12, `day` 1–31, not checked against
    /// the month's length: day 31 of a 30-day month is the 1st of the next).
    pub fn from_date(year: i64, month: u32, day: u32) -> Timestamp {
        Timestamp(days_from_civil(year, month, day) * 86_400_000)
    }

    /// The UTC date (year, month 1–12, day 1–31) this instant falls on.
    pub fn date(self) -> (i64, u32, u32) {
        civil_from_days(self.0.div_euclid(86_400_000))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-21T21:05:28.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time {input:?}: use a date (2026-11-21) or an RFC 3339 time (2026-11-21T09:30:00Z)"
)]
pub struct ParseTimeError {
    input: String,
}

impl std::str::FromStr for Timestamp {
    type Err = ParseTimeError;

    /// Reads `2026-11-21`, `2026-11-21T09:30`, `2026-11-21 09:30:15`, with optional
    /// fractions of a second and a `Z` or `±HH:MM` offset (none means UTC).
    fn from_str(s: &str) -> Result<Timestamp, ParseTimeError> {
        let err = || ParseTimeError {
            input: s.chars().take(64).collect(),
        };
        let t = s.trim();
        let num = |part: &str, len: usize| -> Result<i64, ParseTimeError> {
            if part.len() != len || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let date = t.get(..10).ok_or_else(err)?;
        let (year, month, day) = (
            num(date.get(..4).ok_or_else(err)?, 4)?,
            num(date.get(5..7).ok_or_else(err)?, 2)?,
            num(date.get(8..10).ok_or_else(err)?, 2)?,
        );
        if date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' {
            return Err(err());
        }
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            _ => return Err(err()),
        };
        if !(1..=days_in_month).contains(&day) {
            return Err(err());
        }
        let mut millis = days_from_civil(year, month as u32, day as u32) * 86_400_000;
        let rest = &t[10..];
        if rest.is_empty() {
            return Ok(Timestamp(millis));
        }
        let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(err)?;
        // The offset: `Z`, `+HH:MM` or `-HH:MM` at the end, if any.
        let (clock, offset) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else if let Some(at) = rest.rfind(['+', '-']) {
            let (clock, off) = rest.split_at(at);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let off = off[1..].replace(':', "");
            let minutes = num(off.get(..2).ok_or_else(err)?, 2)? * 60
                + num(off.get(2..).ok_or_else(err)?, 2)?;
            (clock, sign * minutes * 60_000)
        } else {
            (rest, 0)
        };
        let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let mut parts = hms.split(':');
        let hour = num(parts.next().ok_or_else(err)?, 2)?;
        let minute = num(parts.next().ok_or_else(err)?, 2)?;
        let second = parts.next().map_or(Ok(0), |p| num(p, 2))?;
        if parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
            return Err(err());
        }
        let ms = if fraction.is_empty() {
            0
        } else {
            if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            format!("{fraction:0<3}")[..3]
                .parse::<i64>()
                .map_err(|_| err())?
        };
        millis += ((hour * 60 + minute) * 60 + second) * 1000 + ms - offset;
        Ok(Timestamp(millis))
    }
}

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_one_millisecond_follow_the_order_of_making() {
        let ms: u128 = 1_700_000_000_000 << 80;
        // A lower random part in the same millisecond comes after the last one.
        assert_eq!(next_after(ms | 500, ms | 7), ms | 501);
        // A higher one is kept.
        assert_eq!(next_after(ms | 500, ms | 900), ms | 900);
        // Another millisecond starts afresh, earlier or later.
        let later = (1_700_000_000_001 << 80) | 3;
        assert_eq!(next_after(ms | 500, later), later);
        let earlier = (1_699_999_999_999 << 80) | 3;
        assert_eq!(next_after(ms | 500, earlier), earlier);
        // At the end of the random bits, the fresh id is kept.
        let full = ms | ((1 << 80) - 1);
        assert_eq!(next_after(full, ms | 4), ms | 4);
    }

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let early = MemoryId::new(Timestamp::from_millis(1_000));
        let late = MemoryId::new(Timestamp::from_millis(2_000));
        assert!(early < late);
        let text = early.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<MemoryId>(), Ok(early));
    }

    #[test]
    fn bad_ids_name_the_problem() {
        let err = "short".parse::<MemoryId>().unwrap_err().to_string();
        assert!(err.contains("memory id") && err.contains("26"), "{err}");
        let err = "0123456789ABCDEFGHJKMNPQR!"
            .parse::<CollectionId>()
            .unwrap_err();
        assert!(err.to_string().contains("collection id"), "{err}");
    }

    #[test]
    fn times_parse_and_print_back() {
        for (text, millis) in [
            ("1970-01-01", 0),
            ("2026-11-21T21:05:28.123Z", 1_795_295_128_123),
            ("2026-11-21 21:05:28.123", 1_795_295_128_123),
            ("2026-11-21T22:05:28.123+01:00", 1_795_295_128_123),
            ("2000-02-29T00:00", 951_782_400_000),
            ("1969-12-31T23:59:59Z", -1000),
        ] {
            let t: Timestamp = text.parse().expect(text);
            assert_eq!(t.as_millis(), millis, "{text}");
        }
        for t in [0, 1_795_295_128_123, -86_400_001, 951_782_400_000] {
            let t = Timestamp::from_millis(t);
            assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        }
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-02-30",
            "2026-11-21T25:00",
            "2026-11-21X",
            "yesterday",
            "2026-11-21T10:00+1",
            "2026-11-21T10:00:00.1234567890Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(
            Timestamp::from_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_795_813_528_123).to_string(),
            "2026-11-27T21:05:28.123Z"
        );
        assert_eq!(
            Timestamp::from_millis(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }
}
