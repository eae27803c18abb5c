//! The `cron()` dialect of Secrets Manager rotation schedules: parsing with its rules and
//! walking the firings (no crate implements this dialect: `L`, `#`, `?`, no `W`, minutes `0`,
//! year `*`, hour increments that reset each day).

use super::*;

/// Which days of a month a cron expression selects.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum DaySpec {
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
pub(super) struct Cron {
    /// Bit h set = fires at h:00.
    pub(super) hours: u32,
    /// Bit m set (1–12).
    pub(super) months: u16,
    pub(super) days: DaySpec,
    /// Facts established at parse time by walking a full calendar cycle.
    pub(super) first_hour: i64,
    pub(super) last_hour: i64,
    /// Shortest time between two consecutive firings, in hours.
    pub(super) min_gap_hours: i64,
}

pub(super) const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
pub(super) const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    pub(super) fn parse(expr: &str, inner: &str) -> Result<Cron, ScheduleError> {
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
    pub(super) fn check_frequency(&mut self) -> Result<(), String> {
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
    pub(super) fn window_hours(&self, requested: Option<i64>) -> Result<i64, ScheduleError> {
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

    pub(super) fn matches(&self, day: Date) -> bool {
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
    pub(super) fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
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
    pub(super) fn last_at_or_before(&self, now: Timestamp, not_before: i64) -> Option<i64> {
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

pub(super) fn hours_of(mask: u32) -> impl DoubleEndedIterator<Item = i64> {
    (0..24i64).filter(move |h| mask & (1 << h) != 0)
}

/// A list field: `*`, `a`, `a-b`, with an optional `/step` (`*/s`, `a/s`, `a-b/s`), joined by
/// commas. Returns a bit set over `min..=max`.
pub(super) fn parse_list(
    field: &str,
    name: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<u64, String> {
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

pub(super) fn parse_value(
    raw: &str,
    name: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<u32, String> {
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

pub(super) fn parse_dom(field: &str) -> Result<DaySpec, String> {
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

pub(super) fn parse_dow(field: &str) -> Result<DaySpec, String> {
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
