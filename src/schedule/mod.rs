//! When rotations are due: the rotation schedules of Secrets Manager (`RotationRules`),
//! validated with the same rules and turned into concrete UTC windows.
//!
//! # Rules enforced (Secrets Manager user guide, "Rotation schedules", and `RotationRulesType`)
//!
//! - `automaticallyAfterDays`: 1–1000.
//! - `rate(N hour|hours)`: N 4–23 (rotation at most every four hours; 24 hours or more is
//!   written in days). `rate(N day|days)`: N 1–999 ("the maximum rotation period is 999 days").
//! - `cron(minutes hours day-of-month month day-of-week year)`, UTC, six fields:
//!   minutes must be `0` (windows open on the hour); hours 0–23 with `, - * /`;
//!   day-of-month 1–31 with `, - * ? / L`; month 1–12 or JAN–DEC with `, - * /`;
//!   day-of-week 1–7 or SUN–SAT (1 = SUN) with `, - * ? / L #`; year must be `*`.
//!   Exactly one of day-of-month and day-of-week is `?`. `W` is refused: the Secrets Manager
//!   table does not list it for rotation schedules (EventBridge has it, Secrets Manager not).
//!   Two consecutive firings must be at least four hours apart (checked across midnight too),
//!   the expression must fire at all, and never more than a year apart (what "year must be
//!   `*`" is for: `cron(0 0 29 2 ? *)` fires once in four years and is refused).
//!   Hour increments reset each day, as in Secrets Manager: `cron(0 4/12 * * ? *)` is 04:00
//!   and 16:00 every day.
//! - `duration` (`Nh`, 1–24) must not extend into the next window nor, for cron schedules and
//!   day rates, into the next UTC day (start hour + duration <= 24).
//!
//! # Windows and defaults
//!
//! - cron: a window opens at each firing. Default duration, as in Secrets Manager: one hour
//!   when the expression fires several times a day ("a schedule in hours"), otherwise until
//!   the end of the UTC day.
//! - `rate(N hours)`: windows open every N hours on a grid anchored at midnight UTC (Unix
//!   epoch), so for N dividing 24 they are 00:00, N:00, ... each day as in Secrets Manager,
//!   and for other N consecutive windows are always exactly N hours apart. Default 1h.
//! - `rate(N days)` and `automaticallyAfterDays: N` (the same thing): relative to the last
//!   rotation, like Secrets Manager ("calculates the next rotation date based on the previous
//!   rotation"). The window opens at 00:00 UTC on the UTC date of `last + N days` and by
//!   default lasts until the end of that day, so a credential is never older than N days
//!   plus the time a missed window waits. These windows depend on `last`:
//!   [`RotationPlan::next_window_start`] treats `after` as the last rotation, and
//!   [`RotationPlan::window_containing`] returns `None` (use [`RotationPlan::due`]).
//!
//! A window that passed without a rotation is not skipped: [`RotationPlan::due`] answers
//! [`Due::Now`] until a rotation newer than that window's start is recorded.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};

use crate::crd::RotationSchedule;

mod cron;
use cron::*;

const HOUR: i64 = 3600;
/// Secrets Manager rotates at most every four hours.
const MIN_INTERVAL_HOURS: i64 = 4;

/// A schedule Secrets Manager would refuse, with a message a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid(msg.into())
}

/// A validated schedule and its window length.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationPlan {
    kind: Kind,
    /// Window length in hours, 1–24.
    window_hours: i64,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// `automaticallyAfterDays` or `rate(N days)`: relative to the last rotation.
    Days(i64),
    /// `rate(N hours)`: every N hours on a grid anchored at the Unix epoch.
    Hours(i64),
    Cron(Cron),
}

/// Outcome of [`RotationPlan::due`].
#[derive(Clone, Debug, PartialEq)]
pub enum Due {
    /// A window opened after the last rotation and has started (or passed): rotate now.
    Now,
    /// The next window opens at this instant.
    At(Timestamp),
}

impl RotationPlan {
    /// Validates a schedule with Secrets Manager's rules and fills in the default window.
    pub fn from_spec(spec: &RotationSchedule) -> Result<RotationPlan, ScheduleError> {
        let kind = match (
            spec.automatically_after_days,
            spec.schedule_expression.as_deref(),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "set either automaticallyAfterDays or scheduleExpression, not both",
                ));
            }
            (None, None) => {
                return Err(invalid("set automaticallyAfterDays or scheduleExpression"));
            }
            (Some(days), None) => {
                if !(1..=1000).contains(&days) {
                    return Err(invalid(format!(
                        "automaticallyAfterDays: {days} is outside 1–1000"
                    )));
                }
                Kind::Days(i64::from(days))
            }
            (None, Some(expr)) => parse_expression(expr)?,
        };
        let requested = spec.duration.as_deref().map(parse_duration).transpose()?;
        let window_hours = match &kind {
            Kind::Days(_) => requested.unwrap_or(24),
            Kind::Hours(n) => {
                let d = requested.unwrap_or(1);
                if d > *n {
                    return Err(invalid(format!(
                        "duration {d}h is longer than the {n} hours between windows: the window must not extend into the next one"
                    )));
                }
                d
            }
            Kind::Cron(cron) => cron.window_hours(requested)?,
        };
        Ok(RotationPlan { kind, window_hours })
    }

    /// Length of each window.
    pub fn window_length(&self) -> SignedDuration {
        SignedDuration::from_hours(self.window_hours)
    }

    /// Whether windows are placed relative to the last rotation (`automaticallyAfterDays`,
    /// `rate(N days)`) rather than fixed on the calendar.
    pub fn is_relative(&self) -> bool {
        matches!(self.kind, Kind::Days(_))
    }

    /// Start of the first window strictly after `after` (UTC). For relative schedules
    /// (`automaticallyAfterDays`, `rate(N days)`) `after` is taken as the last rotation.
    /// A schedule so far in the future that it leaves jiff's range saturates to `Timestamp::MAX`.
    pub fn next_window_start(&self, after: Timestamp) -> Timestamp {
        let secs = after.as_second();
        match &self.kind {
            Kind::Days(n) => {
                let date = utc_date(after).saturating_add(Span::new().days(*n));
                ts(date_start(date))
            }
            Kind::Hours(n) => {
                let step = n * HOUR;
                ts((secs.div_euclid(step) + 1).saturating_mul(step))
            }
            Kind::Cron(cron) => cron.next_after(after).unwrap_or(Timestamp::MAX),
        }
    }

    /// The window `now` is in, if any: (start, end), end exclusive. Always `None` for relative
    /// schedules, whose windows depend on the last rotation: use [`RotationPlan::due`] or
    /// [`RotationPlan::window_after`] for them.
    pub fn window_containing(&self, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let secs = now.as_second();
        let len = self.window_hours * HOUR;
        let start = match &self.kind {
            Kind::Days(_) => return None,
            Kind::Hours(n) => secs.div_euclid(n * HOUR) * (n * HOUR),
            // Windows never exceed 24h, so only firings in the last day can contain `now`.
            Kind::Cron(cron) => cron.last_at_or_before(now, secs - len)?,
        };
        (secs < start + len).then(|| (ts(start), ts(start + len)))
    }

    /// The first window that opens strictly after `last`: (start, end), end exclusive.
    pub fn window_after(&self, last: Timestamp) -> (Timestamp, Timestamp) {
        let start = self.next_window_start(last);
        (
            start,
            start
                .checked_add(self.window_length())
                .unwrap_or(Timestamp::MAX),
        )
    }

    /// Due decision: `last` = last successful rotation (or the credential's creation time when
    /// never rotated). Due now if a window started after `last` and at or before `now` (a
    /// missed window runs at the next opportunity, i.e. now); otherwise the start of the next
    /// window after `max(last, now)`.
    pub fn due(&self, last: Timestamp, now: Timestamp) -> Due {
        // The first window after `last` is also the first after `now` when it has not started
        // yet: no window can open between `last` and it.
        let start = self.next_window_start(last);
        if start <= now {
            Due::Now
        } else {
            Due::At(start)
        }
    }
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

fn utc_date(t: Timestamp) -> Date {
    TimeZone::UTC.to_datetime(t).date()
}

/// Unix seconds of 00:00 UTC on `date`.
fn date_start(date: Date) -> i64 {
    TimeZone::UTC
        .to_timestamp(date.at(0, 0, 0, 0))
        .map_or(i64::MAX, |t| t.as_second())
}

/// `Nh`, 1–24: Secrets Manager's `Duration`.
fn parse_duration(raw: &str) -> Result<i64, ScheduleError> {
    let hours = raw
        .strip_suffix('h')
        .filter(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<i64>().ok());
    match hours {
        Some(h) if (1..=24).contains(&h) => Ok(h),
        _ => Err(invalid(format!(
            "duration {raw:?}: write whole hours from 1h to 24h, for example \"3h\""
        ))),
    }
}

fn parse_expression(raw: &str) -> Result<Kind, ScheduleError> {
    let expr = raw.trim();
    if let Some(inner) = expr.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        return parse_rate(expr, inner);
    }
    if let Some(inner) = expr.strip_prefix("cron(").and_then(|s| s.strip_suffix(')')) {
        return Cron::parse(expr, inner).map(Kind::Cron);
    }
    Err(invalid(format!(
        "scheduleExpression {expr:?}: write rate(N hours), rate(N days) or cron(0 H DOM MON DOW *) in UTC"
    )))
}

fn parse_rate(expr: &str, inner: &str) -> Result<Kind, ScheduleError> {
    let mut parts = inner.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(format!(
            "{expr}: write rate(N hours) or rate(N days)"
        )));
    };
    let n: i64 = match value.parse() {
        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) && n > 0 => n,
        _ => {
            return Err(invalid(format!(
                "{expr}: {value:?} is not a positive whole number"
            )));
        }
    };
    match unit {
        "hour" | "hours" => {
            if n < MIN_INTERVAL_HOURS {
                Err(invalid(format!(
                    "{expr}: Secrets Manager rotates at most every 4 hours; use rate(4 hours) or more"
                )))
            } else if n >= 24 {
                let hint = if n % 24 == 0 {
                    format!("rate({} days)", n / 24)
                } else {
                    "rate(N days) or a cron() expression".into()
                };
                Err(invalid(format!(
                    "{expr}: rates of 24 hours or more are written in days: use {hint}"
                )))
            } else {
                Ok(Kind::Hours(n))
            }
        }
        "day" | "days" => {
            if n > 999 {
                Err(invalid(format!(
                    "{expr}: the longest rotation period Secrets Manager allows is 999 days"
                )))
            } else {
                Ok(Kind::Days(n))
            }
        }
        _ => Err(invalid(format!(
            "{expr}: unit {unit:?} must be hour, hours, day or days"
        ))),
    }
}

#[cfg(test)]
mod tests;
