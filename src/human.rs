//! Numbers and times as people and APIs read them: sizes (`1.2 GB`), counts
//! (`135M`, `7.6B`), ages (`3 days ago`), RFC 3339 timestamps and local dates.
//!
//! Owns: every such format olm prints, so that `list`, `show`, `pull`, the
//! server and chat templates agree. Benchmark reports keep llama-bench's own
//! formats (`bench::report`). Must not touch: anything but std and libc.

use std::time::{SystemTime, UNIX_EPOCH};

/// Sizes in decimal units: `850 B`, `1.2 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Counts such as parameters: `950`, `12K`, `135M`, `7.6B`.
pub fn count(count: u64) -> String {
    let value = count as f64;
    match count {
        0..=999 => format!("{count}"),
        1_000..=999_999 => format!("{:.0}K", value / 1e3),
        1_000_000..=999_999_999 => format!("{:.0}M", value / 1e6),
        _ => format!("{:.1}B", value / 1e9),
    }
}

/// How long ago `then` was at `now` (both Unix seconds): "just now",
/// "5 minutes ago", "3 days ago".
pub fn ago(now: u64, then: u64) -> String {
    let seconds = now.saturating_sub(then);
    let (value, unit) = match seconds {
        0..=59 => return "just now".into(),
        60..=3599 => (seconds / 60, "minute"),
        3600..=86_399 => (seconds / 3600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{value} {unit}{} ago", if value == 1 { "" } else { "s" })
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_secs())
}

/// RFC 3339 UTC timestamp with nanoseconds, as Ollama writes `created_at`.
pub fn rfc3339(time: SystemTime) -> String {
    let duration = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = duration.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        duration.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The local date and time now, formatted with strftime (chat templates put
/// it in system prompts: `%d %b %Y`). Empty when the format is unusable.
pub fn local_now(format: &str) -> String {
    let Ok(format) = std::ffi::CString::new(format) else {
        return String::new();
    };
    let mut buffer = [0u8; 128];
    // SAFETY: time/localtime_r/strftime get valid pointers to local values and
    // a buffer whose length is passed along; strftime NUL-terminates or returns 0.
    let written = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut parts: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut parts).is_null() {
            return String::new();
        }
        libc::strftime(
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            format.as_ptr(),
            &parts,
        )
    };
    String::from_utf8_lossy(&buffer[..written]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sizes_use_decimal_units() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(98_000_000), "98.0 MB");
        assert_eq!(size(4_680_000_000), "4.7 GB");
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(count(950), "950");
        assert_eq!(count(134_515_008), "135M");
        assert_eq!(count(7_615_616_512), "7.6B");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(100, 90), "just now");
        assert_eq!(ago(3600 * 5, 0), "5 hours ago");
        assert_eq!(ago(86_400, 0), "1 day ago");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let time = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(rfc3339(time), "2024-02-29T23:59:59.000000000Z");
    }

    #[test]
    fn local_now_formats_a_year() {
        assert_eq!(local_now("%Y").len(), 4);
    }
}
