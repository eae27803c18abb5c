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

/// Which days of a month a cron expression selects.
#[derive(Clone, Debug, PartialEq)]
enum DaySpec {
    /// Day-of-month bit set (bit 1 = the 1st).
    MonthDays(u32),
    /// Day-of-month `L`.
    LastDayOfMonth,
    /// Day-of-week bit set (bit 1 = Sunday ... bit 7 = Saturday).
    WeekDays(u8),
    /// `nL`: the last weekday n of the month.
    LastWeekday(u8),
    /// `n#k`: the k-th weekday n of the month.
    NthWeekday(u8, u8),
}

#[derive(Clone, Debug, PartialEq)]
struct Cron {
    /// Bit h set = fires at h:00.
    hours: u32,
    /// Bit m set (1–12).
    months: u16,
    days: DaySpec,
    /// Facts established at parse time by walking a full calendar cycle.
    first_hour: i64,
    last_hour: i64,
    /// Shortest time between two consecutive firings, in hours.
    min_gap_hours: i64,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    fn parse(expr: &str, inner: &str) -> Result<Cron, ScheduleError> {
        let err = |msg: String| invalid(format!("{expr}: {msg}"));
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = fields[..] else {
            return Err(err(format!(
                "expected 6 fields (minutes hours day-of-month month day-of-week year), found {}",
                fields.len()
            )));
        };
        if minutes != "0" {
            return Err(err(
                "the minutes field must be 0: Secrets Manager rotation windows open on the hour"
                    .into(),
            ));
        }
        if year != "*" {
            return Err(err(
                "the year field must be '*': Secrets Manager schedules repeat every year (rotations cannot be more than a year apart)".into(),
            ));
        }
        let hours = parse_list(hours, "hours", 0, 23, &[]).map_err(err)? as u32;
        let months = parse_list(month, "month", 1, 12, &MONTH_NAMES).map_err(err)? as u16;
        let days = match (dom, dow) {
            ("?", "?") => {
                return Err(err(
                    "day-of-month and day-of-week cannot both be '?': set one of them".into(),
                ));
            }
            ("?", dow) => parse_dow(dow).map_err(err)?,
            (dom, "?") => parse_dom(dom).map_err(err)?,
            _ => {
                return Err(err(
                    "use '?' in day-of-month or day-of-week (one of them), e.g. cron(0 4 * * ? *) or cron(0 4 ? * MON *)".into(),
                ));
            }
        };
        let mut cron = Cron {
            hours,
            months,
            days,
            first_hour: 0,
            last_hour: 0,
            min_gap_hours: 0,
        };
        cron.check_frequency().map_err(err)?;
        Ok(cron)
    }

    /// Walks 28 years (2001–2028: every combination of weekday, date and leap year that occurs
    /// between 1901 and 2099), checking the schedule fires, never more often than every four
    /// hours and never more than a year apart.
    fn check_frequency(&mut self) -> Result<(), String> {
        let start = jiff::civil::date(2001, 1, 1);
        let end = jiff::civil::date(2029, 1, 1);
        let cycle_hours = (date_start(end) - date_start(start)) / HOUR;
        let (mut first, mut prev): (Option<i64>, Option<i64>) = (None, None);
        let (mut min_gap, mut max_gap) = (i64::MAX, 0);
        let mut gap = |a: i64, b: i64| {
            min_gap = min_gap.min(b - a);
            max_gap = max_gap.max(b - a);
        };
        let mut day = start;
        while day < end {
            if self.matches(day) {
                let base = date_start(day) / HOUR;
                for h in hours_of(self.hours) {
                    let t = base + h;
                    if let Some(p) = prev {
                        gap(p, t);
                    }
                    first.get_or_insert(t);
                    prev = Some(t);
                }
            }
            let Ok(next) = day.tomorrow() else { break };
            day = next;
        }
        let (Some(first), Some(last)) = (first, prev) else {
            return Err(
                "this expression never fires (no such date): check day-of-month against month"
                    .into(),
            );
        };
        // The cycle repeats: the gap from the last firing to the first of the next cycle.
        gap(last, first + cycle_hours);
        if min_gap < MIN_INTERVAL_HOURS {
            return Err(format!(
                "fires {min_gap} hour(s) apart; Secrets Manager rotates at most every 4 hours (consecutive firings, including across midnight, must be at least 4 hours apart)"
            ));
        }
        if max_gap > 366 * 24 {
            return Err(
                "firings can be more than a year apart (for example February 29 or a fifth weekday); Secrets Manager schedules must rotate at least yearly".into(),
            );
        }
        let hours: Vec<i64> = hours_of(self.hours).collect();
        self.first_hour = hours[0];
        self.last_hour = hours[hours.len() - 1];
        self.min_gap_hours = min_gap;
        Ok(())
    }

    /// The window length for a requested `duration` (or the default), checked against the
    /// schedule.
    fn window_hours(&self, requested: Option<i64>) -> Result<i64, ScheduleError> {
        let several_a_day = self.hours.count_ones() > 1;
        let Some(d) = requested else {
            // Secrets Manager: a schedule in hours closes after one hour, one in days at the
            // end of the UTC day.
            return Ok(if several_a_day {
                1
            } else {
                24 - self.last_hour
            });
        };
        if self.last_hour + d > 24 {
            return Err(invalid(format!(
                "duration {d}h: a window opening at {:02}:00 UTC would extend into the next UTC day (start hour + duration must be at most 24)",
                self.last_hour
            )));
        }
        if d > self.min_gap_hours {
            return Err(invalid(format!(
                "duration {d}h is longer than the shortest gap between windows ({}h): the window must not extend into the next one",
                self.min_gap_hours
            )));
        }
        Ok(d)
    }

    fn matches(&self, day: Date) -> bool {
        if self.months & (1 << day.month()) == 0 {
            return false;
        }
        let dom = day.day() as u8;
        let last_dom = day.days_in_month() as u8;
        let wd = day.weekday().to_sunday_one_offset() as u8;
        match self.days {
            DaySpec::MonthDays(mask) => mask & (1 << dom) != 0,
            DaySpec::LastDayOfMonth => dom == last_dom,
            DaySpec::WeekDays(mask) => mask & (1 << wd) != 0,
            DaySpec::LastWeekday(w) => wd == w && dom + 7 > last_dom,
            DaySpec::NthWeekday(w, n) => wd == w && (dom - 1) / 7 + 1 == n,
        }
    }

    /// First firing strictly after `after`. Validation guarantees one within a year.
    fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let secs = after.as_second();
        let mut day = utc_date(after);
        for _ in 0..=2 * 366 {
            if self.matches(day) {
                let base = date_start(day);
                if let Some(h) = hours_of(self.hours).find(|h| base + h * HOUR > secs) {
                    return Some(ts(base + h * HOUR));
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// Last firing at or before `now` and not before `not_before` (Unix seconds).
    fn last_at_or_before(&self, now: Timestamp, not_before: i64) -> Option<i64> {
        let secs = now.as_second();
        let mut day = utc_date(now);
        loop {
            let base = date_start(day);
            if base + 23 * HOUR < not_before {
                return None;
            }
            if self.matches(day) {
                let hit = hours_of(self.hours)
                    .rev()
                    .map(|h| base + h * HOUR)
                    .find(|t| *t <= secs);
                if let Some(t) = hit {
                    return (t >= not_before).then_some(t);
                }
            }
            day = day.yesterday().ok()?;
        }
    }
}

fn hours_of(mask: u32) -> impl DoubleEndedIterator<Item = i64> {
    (0..24i64).filter(move |h| mask & (1 << h) != 0)
}

/// A list field: `*`, `a`, `a-b`, with an optional `/step` (`*/s`, `a/s`, `a-b/s`), joined by
/// commas. Returns a bit set over `min..=max`.
fn parse_list(field: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step = s.parse::<u32>().ok().filter(|s| *s >= 1).ok_or_else(|| {
                    format!("{name} field: step {s:?} in {item:?} must be a positive number")
                })?;
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                parse_value(a, name, min, max, names)?,
                parse_value(b, name, min, max, names)?,
            );
            if a > b {
                return Err(format!(
                    "{name} field: range {range:?} runs backwards; write the smaller value first"
                ));
            }
            (a, b)
        } else {
            let a = parse_value(range, name, min, max, names)?;
            // `a/s` means from a to the end of the field in steps of s.
            (a, if step.is_some() { max } else { a })
        };
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            mask |= 1 << v;
        }
    }
    Ok(mask)
}

fn parse_value(raw: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(raw)) {
        return Ok(min + i as u32);
    }
    let hint = if names.is_empty() {
        String::new()
    } else {
        format!(" or {}–{}", names[0], names[names.len() - 1])
    };
    match raw.parse::<u32>() {
        Ok(v) if raw.bytes().all(|b| b.is_ascii_digit()) && (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "{name} field: {raw:?} is not a value from {min}–{max}{hint}"
        )),
    }
}

fn parse_dom(field: &str) -> Result<DaySpec, String> {
    if field == "L" {
        return Ok(DaySpec::LastDayOfMonth);
    }
    if field.contains('W') || field.contains('w') {
        return Err(
            "day-of-month field: 'W' (nearest weekday) is not supported in Secrets Manager rotation schedules".into()
        );
    }
    if field.contains('L') || field.contains('#') {
        return Err(format!(
            "day-of-month field: {field:?} — 'L' must stand alone (last day of the month) and '#' belongs in day-of-week"
        ));
    }
    parse_list(field, "day-of-month", 1, 31, &[]).map(|m| DaySpec::MonthDays(m as u32))
}

fn parse_dow(field: &str) -> Result<DaySpec, String> {
    let weekday = |raw: &str| parse_value(raw, "day-of-week", 1, 7, &DAY_NAMES).map(|v| v as u8);
    // Quartz and EventBridge: `L` alone is the last day of the week, Saturday.
    if field == "L" {
        return Ok(DaySpec::WeekDays(1 << 7));
    }
    let special = field.contains('#') || field.ends_with('L');
    if special && field.contains([',', '-', '/', '*']) {
        return Err(format!(
            "day-of-week field: {field:?} — 'nL' and 'n#k' must be the whole field"
        ));
    }
    if let Some((w, n)) = field.split_once('#') {
        let n = n
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=5).contains(n))
            .ok_or_else(|| {
                format!("day-of-week field: in {field:?} the number after '#' must be 1–5")
            })?;
        return Ok(DaySpec::NthWeekday(weekday(w)?, n));
    }
    if let Some(w) = field.strip_suffix('L').filter(|w| !w.is_empty()) {
        return Ok(DaySpec::LastWeekday(weekday(w)?));
    }
    if field.contains('L') || field.contains('#') {
        return Err(format!(
            "day-of-week field: {field:?} — 'nL' and 'n#k' must be the whole field"
        ));
    }
    parse_list(field, "day-of-week", 1, 7, &DAY_NAMES).map(|m| DaySpec::WeekDays(m as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan(expr: &str, duration: Option<&str>) -> Result<RotationPlan, ScheduleError> {
        RotationPlan::from_spec(&RotationSchedule {
            automatically_after_days: None,
            schedule_expression: Some(expr.into()),
            duration: duration.map(Into::into),
        })
    }

    fn ok(expr: &str) -> RotationPlan {
        plan(expr, None).unwrap_or_else(|e| panic!("{expr} should be valid: {e}"))
    }

    fn err(expr: &str, duration: Option<&str>) -> String {
        match plan(expr, duration) {
            Ok(p) => panic!("{expr} should be refused, got {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn days(n: u32, duration: Option<&str>) -> Result<RotationPlan, ScheduleError> {
        RotationPlan::from_spec(&RotationSchedule {
            automatically_after_days: Some(n),
            schedule_expression: None,
            duration: duration.map(Into::into),
        })
    }

    /// The next `n` window starts after `from`.
    fn starts(p: &RotationPlan, from: &str, n: usize) -> Vec<String> {
        let mut at = t(from);
        (0..n)
            .map(|_| {
                at = p.next_window_start(at);
                at.to_string()
            })
            .collect()
    }

    #[test]
    fn spec_shape() {
        assert!(
            RotationPlan::from_spec(&RotationSchedule {
                automatically_after_days: Some(3),
                schedule_expression: Some("rate(3 days)".into()),
                duration: None
            })
            .is_err()
        );
        assert!(
            RotationPlan::from_spec(&RotationSchedule {
                automatically_after_days: None,
                schedule_expression: None,
                duration: None
            })
            .is_err()
        );
    }

    #[test]
    fn automatically_after_days_range() {
        assert!(days(0, None).is_err());
        assert!(days(1001, None).unwrap_err().to_string().contains("1–1000"));
        for n in [1, 30, 1000] {
            assert!(days(n, None).is_ok());
        }
    }

    #[test]
    fn rate_validation() {
        for good in [
            "rate(4 hours)",
            "rate(23 hours)",
            "rate(1 day)",
            "rate(1 days)",
            "rate(10 days)",
            "rate(999 days)",
            " rate( 12  hours ) ",
        ] {
            ok(good);
        }
        assert!(err("rate(3 hours)", None).contains("at most every 4 hours"));
        assert!(err("rate(0 days)", None).contains("positive whole number"));
        assert!(err("rate(-1 days)", None).contains("positive whole number"));
        assert!(err("rate(1.5 days)", None).contains("positive whole number"));
        assert!(err("rate(1000 days)", None).contains("999 days"));
        assert!(err("rate(48 hours)", None).contains("rate(2 days)"));
        assert!(err("rate(30 hours)", None).contains("in days"));
        assert!(err("rate(5 minutes)", None).contains("hour, hours, day or days"));
        assert!(err("rate(5)", None).contains("rate(N hours)"));
        assert!(err("every 5 days", None).contains("scheduleExpression"));
        assert!(err("RATE(5 days)", None).contains("scheduleExpression"));
    }

    #[test]
    fn duration_validation() {
        for bad in ["0h", "25h", "3", "h", "3H", "1.5h", "-1h", "003h", " 3h"] {
            let e = days(1, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("1h to 24h"), "{bad}: {e}");
        }
        assert_eq!(
            days(1, Some("24h")).unwrap().window_length(),
            SignedDuration::from_hours(24)
        );
        assert_eq!(
            days(1, None).unwrap().window_length(),
            SignedDuration::from_hours(24)
        );
        // Hour rates: default 1h, at most the rate.
        assert_eq!(
            ok("rate(6 hours)").window_length(),
            SignedDuration::from_hours(1)
        );
        assert!(plan("rate(6 hours)", Some("6h")).is_ok());
        assert!(err("rate(6 hours)", Some("7h")).contains("next one"));
    }

    #[test]
    fn cron_field_rules() {
        for good in [
            "cron(0 4 * * ? *)",
            "cron(0 16 L * ? *)",
            "cron(0 0 ? * SUN#1 *)",
            "cron(0 8/8 * * ? *)",
            "cron(0 2/10 * * ? *)",
            "cron(0 8 1/7 * ? *)",
            "cron(0 4/12 * * ? *)",
            "cron(0 10 ? * MON-FRI *)",
            "cron(0 10 ? * mon,wed,fri *)",
            "cron(0 0 ? * 6L *)",
            "cron(0 0 ? * FRIL *)",
            "cron(0 0 ? * L *)",
            "cron(0 0 1,15 JAN,APR,JUL,OCT ? *)",
            "cron(0 0 1 */3 ? *)",
            "cron(0 0,6,12,18 1-10 * ? *)",
            "cron(0 23 31 * ? *)",
        ] {
            ok(good);
        }
        let cases = [
            ("cron(0 4 * * ?)", "expected 6 fields"),
            ("cron(0 4 * * ? * *)", "expected 6 fields"),
            ("cron(15 4 * * ? *)", "minutes field must be 0"),
            ("cron(0/30 4 * * ? *)", "minutes field must be 0"),
            ("cron(0 4 * * ? 2030)", "year field must be '*'"),
            ("cron(0 24 * * ? *)", "hours field: \"24\""),
            ("cron(0 4 * * * *)", "use '?'"),
            ("cron(0 4 1 * MON *)", "use '?'"),
            ("cron(0 4 ? * ? *)", "cannot both be '?'"),
            ("cron(0 4 0 * ? *)", "day-of-month field: \"0\""),
            ("cron(0 4 32 * ? *)", "day-of-month field: \"32\""),
            ("cron(0 4 15W * ? *)", "'W'"),
            ("cron(0 4 LW * ? *)", "'W'"),
            ("cron(0 4 L,15 * ? *)", "'L' must stand alone"),
            ("cron(0 4 * 13 ? *)", "month field: \"13\""),
            ("cron(0 4 * FOO ? *)", "JAN–DEC"),
            ("cron(0 4 ? * 8 *)", "day-of-week field: \"8\""),
            ("cron(0 4 ? * 0 *)", "day-of-week field: \"0\""),
            ("cron(0 4 ? * MON#6 *)", "must be 1–5"),
            ("cron(0 4 ? * MON#1,FRI *)", "whole field"),
            ("cron(0 4 ? * MON#0 *)", "must be 1–5"),
            ("cron(0 4 ? * MON,5L *)", "whole field"),
            ("cron(0 4 ? * FRI-MON *)", "runs backwards"),
            ("cron(0 4/0 * * ? *)", "step"),
            ("cron(0 1,2 * * ? *)", "at most every 4 hours"),
            ("cron(0 */2 * * ? *)", "at most every 4 hours"),
            // 22:00 then 00:00 the next day: two hours apart across midnight.
            ("cron(0 0,22 * * ? *)", "across midnight"),
            ("cron(0 0 30 2 ? *)", "never fires"),
            ("cron(0 0 31 4,6,9,11 ? *)", "never fires"),
            ("cron(0 0 29 2 ? *)", "more than a year apart"),
            ("cron(0 0 ? 2 SUN#5 *)", "more than a year apart"),
            ("crontab(0 0 * * ? *)", "scheduleExpression"),
        ];
        for (expr, want) in cases {
            let e = err(expr, None);
            assert!(e.contains(want), "{expr}: {e:?} should mention {want:?}");
            assert!(
                e.starts_with(expr.trim()) || e.contains("scheduleExpression"),
                "{e}"
            );
        }
        // 4 hours apart across midnight is the limit and allowed.
        ok("cron(0 0,20 * * ? *)");
        // Consecutive days at 23:00 and 03:00: 4 hours apart, allowed.
        ok("cron(0 3,23 * * ? *)");
    }

    #[test]
    fn cron_windows_and_defaults() {
        // One firing a day: the window runs to the end of the UTC day.
        assert_eq!(
            ok("cron(0 16 * * ? *)").window_length(),
            SignedDuration::from_hours(8)
        );
        assert_eq!(
            ok("cron(0 0 ? * MON *)").window_length(),
            SignedDuration::from_hours(24)
        );
        // Several a day: one hour.
        assert_eq!(
            ok("cron(0 4/12 * * ? *)").window_length(),
            SignedDuration::from_hours(1)
        );
        assert!(plan("cron(0 16 * * ? *)", Some("8h")).is_ok());
        assert!(err("cron(0 16 * * ? *)", Some("9h")).contains("next UTC day"));
        assert!(plan("cron(0 4/12 * * ? *)", Some("8h")).is_ok());
        assert!(err("cron(0 4/12 * * ? *)", Some("9h")).contains("next UTC day"));
        assert!(err("cron(0 0,6 * * ? *)", Some("7h")).contains("shortest gap"));
        assert!(plan("cron(0 0,6 * * ? *)", Some("6h")).is_ok());
    }

    #[test]
    fn cron_next_windows() {
        let p = ok("cron(0 4/12 * * ? *)");
        assert_eq!(
            starts(&p, "2024-03-01T05:00:00Z", 3),
            [
                "2024-03-01T16:00:00Z",
                "2024-03-02T04:00:00Z",
                "2024-03-02T16:00:00Z"
            ]
        );
        // Strictly after: exactly at a firing gives the next one.
        assert_eq!(
            p.next_window_start(t("2024-03-01T04:00:00Z")),
            t("2024-03-01T16:00:00Z")
        );

        // Last day of the month across a leap February and a year end.
        let last = ok("cron(0 16 L * ? *)");
        assert_eq!(
            starts(&last, "2024-01-31T17:00:00Z", 3),
            [
                "2024-02-29T16:00:00Z",
                "2024-03-31T16:00:00Z",
                "2024-04-30T16:00:00Z"
            ]
        );
        assert_eq!(
            last.next_window_start(t("2023-02-01T00:00:00Z")),
            t("2023-02-28T16:00:00Z")
        );
        assert_eq!(
            starts(&last, "2023-12-31T16:00:00Z", 1),
            ["2024-01-31T16:00:00Z"]
        );

        // Day 31 skips short months.
        let d31 = ok("cron(0 0 31 * ? *)");
        assert_eq!(
            starts(&d31, "2024-01-31T00:00:00Z", 3),
            [
                "2024-03-31T00:00:00Z",
                "2024-05-31T00:00:00Z",
                "2024-07-31T00:00:00Z"
            ]
        );

        // First Sunday of the month; second Tuesday.
        let sun1 = ok("cron(0 0 ? * SUN#1 *)");
        assert_eq!(
            starts(&sun1, "2024-01-01T00:00:00Z", 3),
            [
                "2024-01-07T00:00:00Z",
                "2024-02-04T00:00:00Z",
                "2024-03-03T00:00:00Z"
            ]
        );
        let tue2 = ok("cron(0 9 ? * 3#2 *)");
        assert_eq!(
            starts(&tue2, "2024-12-31T00:00:00Z", 2),
            ["2025-01-14T09:00:00Z", "2025-02-11T09:00:00Z"]
        );

        // Fifth Friday (only some months have one).
        let fri5 = ok("cron(0 0 ? * FRI#5 *)");
        assert_eq!(
            starts(&fri5, "2024-01-01T00:00:00Z", 3),
            [
                "2024-03-29T00:00:00Z",
                "2024-05-31T00:00:00Z",
                "2024-08-30T00:00:00Z"
            ]
        );

        // Last Friday of the month, including leap February 2024 (29th is a Thursday).
        let lastfri = ok("cron(0 12 ? * 6L *)");
        assert_eq!(
            starts(&lastfri, "2024-01-27T00:00:00Z", 2),
            ["2024-02-23T12:00:00Z", "2024-03-29T12:00:00Z"]
        );

        // Weekdays and month lists.
        let wk = ok("cron(0 10 ? * MON-FRI *)");
        // 2024-03-01 is a Friday.
        assert_eq!(
            starts(&wk, "2024-03-01T10:00:00Z", 2),
            ["2024-03-04T10:00:00Z", "2024-03-05T10:00:00Z"]
        );
        let q = ok("cron(0 0 1 JAN,APR,JUL,OCT ? *)");
        assert_eq!(
            starts(&q, "2024-10-01T00:00:00Z", 2),
            ["2025-01-01T00:00:00Z", "2025-04-01T00:00:00Z"]
        );
        // Day-of-month step: 1, 8, 15, 22, 29.
        let every7 = ok("cron(0 8 1/7 * ? *)");
        assert_eq!(
            starts(&every7, "2024-02-22T08:00:00Z", 2),
            ["2024-02-29T08:00:00Z", "2024-03-01T08:00:00Z"]
        );
    }

    #[test]
    fn cron_window_containing() {
        let p = plan("cron(0 4/12 * * ? *)", Some("2h")).unwrap();
        assert_eq!(
            p.window_containing(t("2024-03-01T05:30:00Z")),
            Some((t("2024-03-01T04:00:00Z"), t("2024-03-01T06:00:00Z")))
        );
        assert_eq!(p.window_containing(t("2024-03-01T06:00:00Z")), None);
        assert_eq!(p.window_containing(t("2024-03-01T03:59:59Z")), None);
        assert_eq!(
            p.window_containing(t("2024-03-01T16:00:00Z")).unwrap().0,
            t("2024-03-01T16:00:00Z")
        );
        // Default window of a daily schedule runs to midnight.
        let daily = ok("cron(0 20 L * ? *)");
        assert_eq!(
            daily.window_containing(t("2024-02-29T23:59:59Z")),
            Some((t("2024-02-29T20:00:00Z"), t("2024-03-01T00:00:00Z")))
        );
        assert_eq!(daily.window_containing(t("2024-03-01T00:00:00Z")), None);
        assert_eq!(daily.window_containing(t("2024-02-28T21:00:00Z")), None);
    }

    #[test]
    fn hour_rates() {
        let p = ok("rate(6 hours)");
        assert!(!p.is_relative());
        assert_eq!(
            starts(&p, "2024-02-28T19:30:00Z", 3),
            [
                "2024-02-29T00:00:00Z",
                "2024-02-29T06:00:00Z",
                "2024-02-29T12:00:00Z"
            ]
        );
        assert_eq!(
            p.window_containing(t("2024-02-29T06:59:00Z")),
            Some((t("2024-02-29T06:00:00Z"), t("2024-02-29T07:00:00Z")))
        );
        assert_eq!(p.window_containing(t("2024-02-29T07:00:00Z")), None);
        // Not dividing 24: always exactly 7 hours apart.
        let p7 = ok("rate(7 hours)");
        let s: Vec<Timestamp> = starts(&p7, "2024-01-01T00:00:00Z", 6)
            .iter()
            .map(|s| t(s))
            .collect();
        assert!(
            s.windows(2)
                .all(|w| w[1].as_second() - w[0].as_second() == 7 * HOUR)
        );
    }

    #[test]
    fn day_rates_are_relative_to_last_rotation() {
        let p = ok("rate(10 days)");
        assert!(p.is_relative());
        assert_eq!(p, days(10, None).unwrap());
        // Window opens at midnight UTC of the day N days later and closes at its end.
        assert_eq!(
            p.window_after(t("2024-02-25T17:45:00Z")),
            (t("2024-03-06T00:00:00Z"), t("2024-03-07T00:00:00Z"))
        );
        assert_eq!(p.window_containing(t("2024-03-06T01:00:00Z")), None);
        // Across a leap day and a year end.
        let one = days(1, Some("3h")).unwrap();
        assert_eq!(
            one.window_after(t("2024-02-28T23:00:00Z")),
            (t("2024-02-29T00:00:00Z"), t("2024-02-29T03:00:00Z"))
        );
        assert_eq!(
            one.next_window_start(t("2024-12-31T12:00:00Z")),
            t("2025-01-01T00:00:00Z")
        );
        let long = days(1000, None).unwrap();
        assert_eq!(
            long.next_window_start(t("2024-01-01T10:00:00Z")),
            t("2026-09-27T00:00:00Z")
        );
    }

    #[test]
    fn due_decisions() {
        let p = days(30, None).unwrap();
        let last = t("2024-01-15T10:00:00Z");
        assert_eq!(
            p.due(last, t("2024-02-01T00:00:00Z")),
            Due::At(t("2024-02-14T00:00:00Z"))
        );
        assert_eq!(p.due(last, t("2024-02-14T00:00:00Z")), Due::Now);
        // Missed by weeks (controller down): due now, not at some later window.
        assert_eq!(p.due(last, t("2024-03-30T00:00:00Z")), Due::Now);
        // After the rotation the next one is 30 days on.
        assert_eq!(
            p.due(t("2024-03-30T00:05:00Z"), t("2024-03-30T00:06:00Z")),
            Due::At(t("2024-04-29T00:00:00Z"))
        );

        let c = ok("cron(0 4/12 * * ? *)");
        // Rotated inside the 04:00 window: next is 16:00.
        assert_eq!(
            c.due(t("2024-03-01T04:10:00Z"), t("2024-03-01T05:00:00Z")),
            Due::At(t("2024-03-01T16:00:00Z"))
        );
        // The 16:00 window was missed (controller down until next morning): due now.
        assert_eq!(
            c.due(t("2024-03-01T04:10:00Z"), t("2024-03-02T02:00:00Z")),
            Due::Now
        );
        // At the exact start of a window.
        assert_eq!(
            c.due(t("2024-03-01T04:10:00Z"), t("2024-03-01T16:00:00Z")),
            Due::Now
        );
        // Rotated exactly at a window start: that window counts as done.
        assert_eq!(
            c.due(t("2024-03-01T16:00:00Z"), t("2024-03-01T16:30:00Z")),
            Due::At(t("2024-03-02T04:00:00Z"))
        );
        // Clock skew: `last` after `now` waits for the window after `last`.
        assert_eq!(
            c.due(t("2024-03-01T17:00:00Z"), t("2024-03-01T15:00:00Z")),
            Due::At(t("2024-03-02T04:00:00Z"))
        );
        // A new credential (last = creation) waits for the first window.
        let w = ok("cron(0 0 ? * SUN#1 *)");
        assert_eq!(
            w.due(t("2024-01-10T00:00:00Z"), t("2024-01-10T00:00:01Z")),
            Due::At(t("2024-02-04T00:00:00Z"))
        );

        let h = ok("rate(4 hours)");
        assert_eq!(
            h.due(t("2024-03-01T01:00:00Z"), t("2024-03-01T03:59:59Z")),
            Due::At(t("2024-03-01T04:00:00Z"))
        );
        assert_eq!(
            h.due(t("2024-03-01T01:00:00Z"), t("2024-03-01T09:00:00Z")),
            Due::Now
        );
    }

    #[test]
    fn errors_name_the_expression() {
        let e = err("cron(0 4 * * ? 2030)", None);
        assert_eq!(
            e,
            "cron(0 4 * * ? 2030): the year field must be '*': Secrets Manager schedules repeat every year (rotations cannot be more than a year apart)"
        );
    }
}
