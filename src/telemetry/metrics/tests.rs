use super::*;

/// The sample line for `series` with exactly these labels (in encoding order).
fn sample(text: &str, series: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{series}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.parse().expect("numeric sample"))
}

fn plain_sample(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

#[test]
fn documented_series_and_labels_are_exported() {
    let calls = ApiCalls::default();
    let metrics = Metrics::new(calls.clone());
    metrics.reconcile_finished("RdsCredential", Duration::from_millis(30), None);
    metrics.reconcile_finished(
        "RdsCredential",
        Duration::from_millis(30),
        Some("AccessDenied"),
    );
    metrics.rotation_finished("alternating-users", "success", Duration::from_secs(3));
    metrics.rotation_finished("single-user", "rolled_back", Duration::from_secs(9));
    metrics.record_last_rotation(
        "team-a",
        "orders",
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120),
    );
    metrics.set_credential_ready("team-a", "orders", "True");
    metrics.set_credential_ready("team-a", "billing", "False");
    metrics.sync_lag(Duration::from_millis(700));
    metrics.secret_synced("written");
    metrics.drift("team-a", "orders", true);
    metrics.rollout("Deployment");
    metrics.set_leader(true);
    metrics.event_received("label_updated");
    metrics.event_received("unknown");
    metrics.event_handled("label_updated");
    metrics.event_ignored("api_call", "unmanaged");
    metrics.event_malformed();
    metrics.event_lag(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2));
    metrics.queue_error("AwsAccessDenied");
    metrics.set_queue_up("https://sqs.us-east-1.amazonaws.com/1/q", true);
    calls.record("secretsmanager", "GetSecretValue", "ok");
    calls.record("secretsmanager", "GetSecretValue", "ok");
    calls.record("rds", "DescribeDBInstances", "AccessDenied");

    let text = metrics.encode();
    let t = text.as_str();
    assert_eq!(
        sample(
            t,
            "rdscred_reconciles_total",
            r#"kind="RdsCredential",result="ok""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_reconciles_total",
            r#"kind="RdsCredential",result="error""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_reconcile_errors_total",
            r#"kind="RdsCredential",reason="AccessDenied""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_reconcile_duration_seconds_count",
            r#"kind="RdsCredential""#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_rotations_total",
            r#"strategy="alternating-users",result="success""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_rotations_total",
            r#"strategy="single-user",result="rolled_back""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_rotation_duration_seconds_sum",
            r#"strategy="single-user""#
        ),
        Some(9.0)
    );
    let age = sample(
        t,
        "rdscred_seconds_since_last_rotation",
        r#"namespace="team-a",name="orders""#,
    )
    .unwrap();
    assert!((120.0..130.0).contains(&age), "age {age}");
    assert_eq!(
        sample(t, "rdscred_credentials", r#"ready="True""#),
        Some(1.0)
    );
    assert_eq!(
        sample(t, "rdscred_credentials", r#"ready="False""#),
        Some(1.0)
    );
    assert_eq!(
        sample(t, "rdscred_credentials", r#"ready="Unknown""#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_aws_api_calls_total",
            r#"service="secretsmanager",operation="GetSecretValue",outcome="ok""#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_aws_api_calls_total",
            r#"service="rds",operation="DescribeDBInstances",outcome="AccessDenied""#
        ),
        Some(1.0)
    );
    assert_eq!(plain_sample(t, "rdscred_sync_lag_seconds_count"), Some(1.0));
    assert_eq!(
        sample(t, "rdscred_secret_syncs_total", r#"result="written""#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_drift_detected_total",
            r#"namespace="team-a",name="orders""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(t, "rdscred_drifted", r#"namespace="team-a",name="orders""#),
        Some(1.0)
    );
    assert_eq!(
        sample(t, "rdscred_rollouts_total", r#"kind="Deployment""#),
        Some(1.0)
    );
    assert_eq!(plain_sample(t, "rdscred_leader"), Some(1.0));
    assert_eq!(
        sample(
            t,
            "rdscred_events_received_total",
            r#"type="label_updated""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(t, "rdscred_events_received_total", r#"type="unknown""#),
        Some(1.0)
    );
    assert_eq!(
        sample(t, "rdscred_events_received_total", r#"type="api_call""#),
        Some(0.0)
    );
    assert_eq!(
        sample(t, "rdscred_events_handled_total", r#"type="label_updated""#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_events_ignored_total",
            r#"type="api_call",reason="unmanaged""#
        ),
        Some(1.0)
    );
    assert_eq!(plain_sample(t, "rdscred_events_malformed_total"), Some(1.0));
    assert_eq!(
        plain_sample(t, "rdscred_event_lag_seconds_count"),
        Some(1.0)
    );
    let lag = plain_sample(t, "rdscred_event_lag_seconds_sum").unwrap();
    assert!((2.0..5.0).contains(&lag), "lag {lag}");
    assert_eq!(
        sample(
            t,
            "rdscred_events_queue_errors_total",
            r#"reason="AwsAccessDenied""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_events_queue_up",
            r#"queue="https://sqs.us-east-1.amazonaws.com/1/q""#
        ),
        Some(1.0)
    );
    assert!(t.contains("# TYPE rdscred_reconcile_duration_seconds histogram"));
    assert!(t.contains("# TYPE rdscred_aws_api_calls counter"));
    assert!(t.ends_with("# EOF\n"));
}

#[test]
fn ready_counts_follow_the_latest_state_and_deletes() {
    let metrics = Metrics::new(ApiCalls::default());
    metrics.set_credential_ready("ns", "a", "Unknown");
    metrics.set_credential_ready("ns", "a", "True");
    metrics.set_credential_ready("ns", "a", "True");
    metrics.set_credential_ready("ns", "b", "something-odd");
    let text = metrics.encode();
    assert_eq!(
        sample(&text, "rdscred_credentials", r#"ready="True""#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "rdscred_credentials", r#"ready="Unknown""#),
        Some(1.0)
    );

    metrics.record_last_rotation("ns", "a", jiff::Timestamp::now());
    metrics.drift("ns", "a", true);
    metrics.drift("ns", "a", false);
    let text = metrics.encode();
    assert_eq!(
        sample(&text, "rdscred_drifted", r#"namespace="ns",name="a""#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "rdscred_drift_detected_total",
            r#"namespace="ns",name="a""#
        ),
        Some(1.0)
    );

    metrics.forget_credential("ns", "a");
    let text = metrics.encode();
    assert_eq!(
        sample(&text, "rdscred_credentials", r#"ready="True""#),
        Some(0.0)
    );
    assert!(
        !text.contains(r#"name="a""#),
        "per-credential series removed:\n{text}"
    );
}

#[test]
fn empty_registry_still_encodes_leader_and_credentials() {
    let text = Metrics::new(ApiCalls::default()).encode();
    assert_eq!(plain_sample(&text, "rdscred_leader"), Some(0.0));
    assert_eq!(
        sample(&text, "rdscred_credentials", r#"ready="True""#),
        Some(0.0)
    );
}

#[test]
fn alerted_counters_exist_at_zero_before_their_first_event() {
    let metrics = Metrics::new(ApiCalls::default());
    let text = metrics.encode();
    let t = text.as_str();
    assert_eq!(
        sample(
            t,
            "rdscred_rotations_total",
            r#"strategy="single-user",result="rolled_back""#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_rotations_total",
            r#"strategy="alternating-users",result="failure""#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            t,
            "rdscred_reconciles_total",
            r#"kind="RdsCredential",result="error""#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(t, "rdscred_rollouts_total", r#"kind="StatefulSet""#),
        Some(0.0)
    );
    metrics.drift("ns", "a", false);
    assert_eq!(
        sample(
            &metrics.encode(),
            "rdscred_drift_detected_total",
            r#"namespace="ns",name="a""#
        ),
        Some(0.0)
    );
}
