//! Human-readable numbers, times and text excerpts.

use prost_types::{Duration, Timestamp};
use rlm_proto::rlm::v1::Usage;

/// `950`, `12.3k`, `4.56M`.
pub fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// `1.2 KiB`, `3.4 MiB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// A cost in dollars: `$0.0123`; `?` when no price is known, `>=$0.01` when
/// only some are (an unknown price is never shown as zero).
pub fn cost(usd: f64, known: bool) -> String {
    let amount = if usd >= 1.0 {
        format!("${usd:.2}")
    } else {
        format!("${usd:.4}")
    };
    match (known, usd > 0.0) {
        (true, _) => amount,
        (false, false) => "?".to_owned(),
        (false, true) => format!(">={amount}"),
    }
}

/// Tokens and cost of a usage: `12.3k tokens (10.0k in, 2.3k out), 4 calls, cost ?`.
pub fn usage(u: &Usage) -> String {
    format!(
        "{} tokens ({} in, {} out), {} calls, cost {}",
        count(u.input_tokens + u.output_tokens),
        count(u.input_tokens),
        count(u.output_tokens),
        u.calls,
        cost(u.cost_usd, u.cost_known)
    )
}

/// Seconds of a protobuf duration (0 when unset).
pub fn secs(d: Option<&Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// `45ms`, `3.40s`, `2m03s`, `1h02m`.
pub fn elapsed(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.2}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (secs / 3600.0) as u64,
            ((secs % 3600.0) / 60.0) as u64
        )
    }
}

/// A protobuf duration as [`elapsed`]; `-` when unset.
pub fn duration(d: Option<&Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| elapsed(secs(Some(d))))
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn split(ts: &Timestamp) -> ((i64, u32, u32), (i64, i64, i64)) {
    let days = ts.seconds.div_euclid(86_400);
    let rem = ts.seconds.rem_euclid(86_400);
    (civil(days), (rem / 3600, rem % 3600 / 60, rem % 60))
}

/// RFC 3339 in UTC with milliseconds: `2025-01-02T03:04:05.678Z`.
pub fn rfc3339(ts: &Timestamp) -> String {
    let ((y, mo, d), (h, mi, s)) = split(ts);
    let millis = ts.nanos.clamp(0, 999_999_999) / 1_000_000;
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

/// `2025-01-02 03:04:05` (UTC), for tables; `-` when unset.
pub fn when(ts: Option<&Timestamp>) -> String {
    ts.map_or_else(
        || "-".to_owned(),
        |ts| {
            let ((y, mo, d), (h, mi, s)) = split(ts);
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
        },
    )
}

/// `text` on one line (newlines shown as `⏎`), cut to `max` chars with `…`.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '\n' => '⏎',
            '\r' | '\t' => ' ',
            c => c,
        })
        .collect();
    cut(&flat, max)
}

/// `text` cut to `max` chars, ending with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The first `max_lines` lines of `text` (each cut to `width` chars), and
/// how many lines were left out. `max_lines == 0` keeps every line.
pub fn head(text: &str, max_lines: usize, width: usize) -> (Vec<String>, usize) {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let keep = if max_lines == 0 {
        lines.len()
    } else {
        lines.len().min(max_lines)
    };
    let shown = lines[..keep]
        .iter()
        .map(|l| {
            if width == 0 {
                (*l).to_owned()
            } else {
                cut(l, width)
            }
        })
        .collect();
    (shown, lines.len() - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(count(950), "950");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(4_560_000), "4.56M");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(cost(0.0, false), "?");
        assert_eq!(cost(0.01234, true), "$0.0123");
        assert_eq!(cost(0.5, false), ">=$0.5000");
        assert_eq!(elapsed(0.045), "45ms");
        assert_eq!(elapsed(3.4), "3.40s");
        assert_eq!(elapsed(123.0), "2m03s");
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        assert_eq!(rfc3339(&ts), "2023-11-14T22:13:20.123Z");
        assert_eq!(when(Some(&ts)), "2023-11-14 22:13:20");
        assert_eq!(
            rfc3339(&Timestamp {
                seconds: 951_782_400,
                nanos: 0
            }),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn excerpts() {
        assert_eq!(one_line("a\nb\tc ", 10), "a⏎b c");
        assert_eq!(cut("abcdef", 4), "abc…");
        let (lines, more) = head("1\n2\n3\n", 2, 0);
        assert_eq!((lines, more), (vec!["1".to_owned(), "2".to_owned()], 1));
    }
}
