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
