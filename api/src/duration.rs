//! Durations as Kubernetes writes them: Go's `time.ParseDuration` syntax, which kube's flags
//! (`--etcd-compaction-interval=1m30s`) and `metav1.Duration` fields use. Every duration flag
//! of edgefleet's binaries parses with [`parse`], so one CLI has one grammar.
//!
//! ```text
//!   duration = "0" | [ "+" ] { number unit }+          (no spaces, at least one unit)
//!   number   = digits [ "." [ digits ] ] | "." digits
//!   unit     = "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
//!
//!   1m30s = 90 s     1.5h = 90 min     500ms     300us     2h45m0.5s     0
//! ```
//!
//! As in Go, units may repeat and add up (`1s1s` = 2 s) and fractions are exact to the
//! nanosecond (truncated beyond). Unlike Go, a negative duration is refused: no edgefleet flag
//! means anything by one. Go's limit (about 290 years) becomes `u64` nanoseconds' (about 584).

use std::fmt;
use std::time::Duration;

/// Why a string is not a duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidDuration {
    input: String,
    reason: &'static str,
}

impl fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {} (use Go's syntax, e.g. 30s, 1m30s, 500ms, 2h)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for InvalidDuration {}

/// Nanoseconds per unit, longest spellings first so that `ms` is not read as `m` + `s`.
const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3600 * 1_000_000_000),
];

/// Parses a Go duration (see the module docs).
pub fn parse(input: &str) -> Result<Duration, InvalidDuration> {
    let fail = |reason| InvalidDuration {
        input: input.to_string(),
        reason,
    };
    let mut rest = input;
    if let Some(stripped) = rest.strip_prefix('-') {
        return Err(fail(if stripped.is_empty() {
            "empty"
        } else {
            "a duration cannot be negative"
        }));
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(fail("empty"));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("expected a number"));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let per_unit = match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, per_unit)) => *per_unit,
            None if unit.is_empty() => return Err(fail("missing unit")),
            None => return Err(fail("unknown unit")),
        };
        let too_long = || fail("too long");
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        let mut nanos = whole.checked_mul(per_unit).ok_or_else(too_long)?;
        // The fraction, exact to the nanosecond: each digit is worth a tenth of the last.
        let mut scale = per_unit;
        for digit in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos = nanos
                .checked_add(u64::from(digit - b'0') * scale)
                .ok_or_else(too_long)?;
        }
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        rest = after;
    }
    Ok(Duration::from_nanos(total))
}

/// Writes `duration` as Go's `Duration.String()` does (`1m30s`, `1.5s`, `500ms`, `0s`): what
/// [`parse`] reads back to the same value.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, per) = match nanos {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(nanos / per, nanos % per, per));
    }
    let secs = nanos / 1_000_000_000;
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    let seconds = decimal(
        u128::from(seconds as u32),
        nanos % 1_000_000_000,
        1_000_000_000,
    );
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `whole.fraction` with the fraction's trailing zeros (and a bare point) removed.
fn decimal(whole: u128, fraction: u128, per: u128) -> String {
    if fraction == 0 {
        return whole.to_string();
    }
    let width = per.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn kubes_flag_values_parse_as_go_parses_them() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30s", ms(30_000)),
            ("1m30s", ms(90_000)),
            ("5m", ms(300_000)),
            ("2h", ms(7_200_000)),
            ("1.5h", ms(5_400_000)),
            ("2h45m0.5s", ms(9_900_500)),
            ("500ms", ms(500)),
            ("300us", Duration::from_micros(300)),
            ("300µs", Duration::from_micros(300)),
            ("300μs", Duration::from_micros(300)),
            ("10ns", Duration::from_nanos(10)),
            (".5s", ms(500)),
            ("1.s", ms(1_000)),
            ("1s1s", ms(2_000)),
            ("1.0000000019s", Duration::from_nanos(1_000_000_001)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn what_go_refuses_is_refused_and_the_message_says_why() {
        for (text, reason) in [
            ("", "empty"),
            ("30", "missing unit"),
            ("1m30", "missing unit"),
            ("1 m", "unknown unit"),
            ("5min", "unknown unit"),
            ("1d", "unknown unit"),
            ("PT1M", "expected a number"),
            (".s", "expected a number"),
            ("s", "expected a number"),
            ("-5s", "a duration cannot be negative"),
            ("99999999999999999999h", "too long"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.reason, reason, "{text}");
        }
        assert_eq!(
            parse("30").unwrap_err().to_string(),
            "invalid duration \"30\": missing unit (use Go's syntax, e.g. 30s, 1m30s, 500ms, 2h)"
        );
    }

    #[test]
    fn durations_format_as_go_prints_them() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (ms(90_000), "1m30s"),
            (ms(1_500), "1.5s"),
            (ms(500), "500ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_nanos(42), "42ns"),
            (ms(7_200_000), "2h0m0s"),
        ] {
            assert_eq!(format(duration), text);
        }
    }

    proptest! {
        #[test]
        fn every_formatted_duration_parses_back_to_itself(nanos in 0u64..=u64::MAX / 2) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn any_string_parses_or_is_refused_without_panicking(text in "\\PC{0,24}") {
            let _ = parse(&text);
        }

        #[test]
        fn sums_of_terms_parse_to_their_sum(terms in proptest::collection::vec((0u64..100_000, 0usize..8), 1..5)) {
            let text: String = terms.iter().map(|(n, u)| format!("{n}{}", UNITS[*u].0)).collect();
            let want: u64 = terms.iter().map(|(n, u)| n * UNITS[*u].1).sum();
            prop_assert_eq!(parse(&text), Ok(Duration::from_nanos(want)));
        }
    }
}
