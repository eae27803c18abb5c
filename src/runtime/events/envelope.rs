//! EventBridge envelopes of Secrets Manager events, as an SQS target receives them: which
//! secret changed, and whether the event can matter to rdscred at all. Pure; nothing here trusts
//! the event for *what* the secret now holds — the consumer re-reads the secret's metadata.
//!
//! Three detail types:
//! - `Secret Label Updated` (native, no CloudTrail needed): `resources: [arn]`,
//!   `detail: {name, labelUpdated, versionId}`. Secrets Manager sends it for every label move
//!   except AWSPENDING and AWSPREVIOUS.
//! - `AWS API Call via CloudTrail`: `detail.eventName` (PutSecretValue, UpdateSecretVersionStage,
//!   RotateSecret, …), the secret in `detail.requestParameters.secretId` (a name, a full ARN or
//!   a partial ARN) and, for some operations, `detail.responseElements.arn` — spelled `aRN` in
//!   events from before February 2024.
//! - `AWS Service Event via CloudTrail` (RotationSucceeded, RotationFailed, …): the secret in
//!   `detail.additionalEventData.SecretId`.
//!
//! Unknown fields are ignored. An SNS notification wrapping the envelope (EventBridge → SNS →
//! SQS without raw message delivery) is unwrapped.

use serde_json::Value;

use crate::aws::AWSCURRENT;

/// The detail types rdscred follows (also the `type` label of the event metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DetailType {
    LabelUpdated,
    ApiCall,
    ServiceEvent,
}

impl DetailType {
    fn from_detail_type(s: &str) -> Option<DetailType> {
        match s {
            "Secret Label Updated" => Some(DetailType::LabelUpdated),
            "AWS API Call via CloudTrail" => Some(DetailType::ApiCall),
            "AWS Service Event via CloudTrail" => Some(DetailType::ServiceEvent),
            _ => None,
        }
    }

    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            DetailType::LabelUpdated => "label_updated",
            DetailType::ApiCall => "api_call",
            DetailType::ServiceEvent => "service_event",
        }
    }
}

/// A Secrets Manager event about one secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEvent {
    pub detail_type: DetailType,
    /// Ways the event names the secret (full ARN, partial ARN, name), most specific first.
    pub ids: Vec<String>,
    /// The region the event comes from (`region` of the envelope), if given.
    pub region: Option<String>,
    /// When the change happened (`time` of the envelope, whole seconds).
    pub time: Option<jiff::Timestamp>,
    /// For `Secret Label Updated` of AWSCURRENT: the version AWSCURRENT moved to.
    pub current_version: Option<String>,
}

/// Why a well-formed message is not worth a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ignored {
    /// Not `aws.secretsmanager`, or a detail type other than the three above.
    OtherSource,
    /// A label other than AWSCURRENT moved (custom labels): AWSCURRENT is all rdscred follows.
    OtherLabel,
    /// A read (GetSecretValue, DescribeSecret, …): nothing changed.
    ReadOnly,
    /// The API call failed (`errorCode` set): nothing changed.
    FailedCall,
    /// A secret rdscred does not follow (decided by the consumer, not by the parser).
    Unmanaged,
}

impl Ignored {
    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Ignored::OtherSource => "other_source",
            Ignored::OtherLabel => "other_label",
            Ignored::ReadOnly => "read_only",
            Ignored::FailedCall => "failed_call",
            Ignored::Unmanaged => "unmanaged",
        }
    }
}

/// What a message body is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Event(SecretEvent),
    /// Well formed but irrelevant; the detail type when it is one of ours.
    Ignored(Ignored, Option<DetailType>),
}

/// A body that is not an EventBridge envelope we can use. The reason is for logs; it never
/// quotes the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct Malformed(pub &'static str);

/// Parses one SQS message body.
pub fn parse(body: &str) -> Result<Parsed, Malformed> {
    let mut envelope: Value = serde_json::from_str(body).map_err(|_| Malformed("not JSON"))?;
    if envelope.get("Type").and_then(Value::as_str) == Some("Notification") {
        let message = envelope
            .get("Message")
            .and_then(Value::as_str)
            .ok_or(Malformed("SNS notification without a Message"))?;
        envelope =
            serde_json::from_str(message).map_err(|_| Malformed("SNS Message is not JSON"))?;
    }
    let Some(obj) = envelope.as_object() else {
        return Err(Malformed("not a JSON object"));
    };
    let source = obj.get("source").and_then(Value::as_str);
    let detail_type = obj.get("detail-type").and_then(Value::as_str);
    let (Some(source), Some(detail_type)) = (source, detail_type) else {
        return Err(Malformed("no source or detail-type"));
    };
    let detail_type = match DetailType::from_detail_type(detail_type) {
        Some(t) if source == "aws.secretsmanager" => t,
        _ => return Ok(Parsed::Ignored(Ignored::OtherSource, None)),
    };
    let detail = obj
        .get("detail")
        .and_then(Value::as_object)
        .ok_or(Malformed("no detail object"))?;
    let region = str_at(&envelope, &["region"]).map(str::to_string);
    let time = match obj.get("time") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .ok_or(Malformed("time is not an RFC 3339 timestamp"))?,
        ),
    };
    let d = &envelope["detail"];
    let mut ids: Vec<String> = Vec::new();
    let mut current_version = None;
    match detail_type {
        DetailType::LabelUpdated => {
            if let Some(label) = str_at(d, &["labelUpdated"])
                && label != AWSCURRENT
            {
                return Ok(Parsed::Ignored(Ignored::OtherLabel, Some(detail_type)));
            }
            let resources = obj.get("resources").and_then(Value::as_array);
            ids.extend(
                resources
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|r| r.contains(":secretsmanager:"))
                    .map(str::to_string),
            );
            ids.extend(str_at(d, &["name"]).map(str::to_string));
            current_version = str_at(d, &["versionId"]).map(str::to_string);
        }
        DetailType::ApiCall => {
            if detail.get("errorCode").is_some_and(|c| !c.is_null()) {
                return Ok(Parsed::Ignored(Ignored::FailedCall, Some(detail_type)));
            }
            let name = str_at(d, &["eventName"]).unwrap_or_default();
            if detail.get("readOnly").and_then(Value::as_bool) == Some(true) || is_read(name) {
                return Ok(Parsed::Ignored(Ignored::ReadOnly, Some(detail_type)));
            }
            for path in [
                &["responseElements", "arn"][..],
                &["responseElements", "aRN"],
                &["requestParameters", "secretId"],
                // CreateSecret names the secret instead.
                &["requestParameters", "name"],
            ] {
                ids.extend(str_at(d, path).map(str::to_string));
            }
        }
        DetailType::ServiceEvent => {
            for path in [
                &["additionalEventData", "SecretId"][..],
                &["additionalEventData", "secretId"],
            ] {
                ids.extend(str_at(d, path).map(str::to_string));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        return Err(Malformed("names no secret"));
    }
    Ok(Parsed::Event(SecretEvent {
        detail_type,
        ids,
        region,
        time,
        current_version,
    }))
}

/// A non-empty string at `path`.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Secrets Manager operations that change nothing (EventBridge delivers only write events from
/// CloudTrail, but a rule matching more than that should not cost a DescribeSecret each).
fn is_read(event_name: &str) -> bool {
    ["Get", "Describe", "List", "BatchGet", "Validate"]
        .iter()
        .any(|p| event_name.starts_with(p))
}

/// The secret name an ARN or partial ARN designates: the resource after `secret:`, and for a
/// full ARN also without the six-character suffix Secrets Manager appends (`-AbCdEf`). Both
/// are returned when the suffix cannot be told apart from a name ending in `-xxxxxx`.
pub fn names_in_arn(arn: &str) -> Vec<&str> {
    let Some(resource) = arn
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(":secret:"))
        .map(|(_, r)| r)
        .filter(|r| !r.is_empty())
    else {
        return Vec::new();
    };
    let mut names = vec![resource];
    if let Some((name, suffix)) = resource.rsplit_once('-')
        && suffix.len() == 6
        && suffix.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.is_empty()
    {
        names.insert(0, name);
    }
    names
}

/// The region of an ARN.
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:")?
        .split(':')
        .nth(2)
        .filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:secretsmanager:us-west-2:012345678901:secret:mySecret-a1b2c3";

    fn event(detail_type: DetailType, ids: &[&str], version: Option<&str>) -> Parsed {
        Parsed::Event(SecretEvent {
            detail_type,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            region: Some("us-west-2".into()),
            time: Some("2024-02-06T16:43:48Z".parse().unwrap()),
            current_version: version.map(str::to_string),
        })
    }

    fn envelope(detail_type: &str, detail: Value, resources: Value) -> String {
        json!({
            "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": detail_type, "source": "aws.secretsmanager",
            "account": "012345678901", "time": "2024-02-06T16:43:48Z", "region": "us-west-2",
            "resources": resources, "detail": detail,
        })
        .to_string()
    }

    fn api_call(name: &str, extra: Value) -> String {
        let mut detail = json!({
            "eventVersion": "1.08", "eventSource": "secretsmanager.amazonaws.com",
            "eventName": name, "awsRegion": "us-west-2", "eventType": "AwsApiCall",
            "userIdentity": { "type": "AssumedRole" }, "someFieldFromTheFuture": [1, 2],
        });
        for (k, v) in extra.as_object().unwrap() {
            detail[k] = v.clone();
        }
        envelope("AWS API Call via CloudTrail", detail, json!([]))
    }

    #[test]
    fn envelopes_of_the_three_detail_types() {
        let label = |label: &str| {
            envelope(
                "Secret Label Updated",
                json!({ "name": "mySecret", "labelUpdated": label, "versionId": "v-2" }),
                json!([ARN]),
            )
        };
        let service = |id_key: &str| {
            envelope(
                "AWS Service Event via CloudTrail",
                json!({ "eventSource": "secretsmanager.amazonaws.com", "eventName": "RotationSucceeded",
                        "eventType": "AwsServiceEvent", "additionalEventData": { id_key: ARN } }),
                json!([]),
            )
        };
        let cases: Vec<(&str, String, Result<Parsed, Malformed>)> = vec![
            (
                "label updated: ARN and name, new AWSCURRENT version",
                label("AWSCURRENT"),
                Ok(event(DetailType::LabelUpdated, &[ARN, "mySecret"], Some("v-2"))),
            ),
            (
                "custom label",
                label("MYLABEL"),
                Ok(Parsed::Ignored(Ignored::OtherLabel, Some(DetailType::LabelUpdated))),
            ),
            (
                "PutSecretValue by name",
                api_call(
                    "PutSecretValue",
                    json!({ "requestParameters": { "secretId": "mySecret", "clientRequestToken": "t" } }),
                ),
                Ok(event(DetailType::ApiCall, &["mySecret"], None)),
            ),
            (
                "UpdateSecretVersionStage by ARN, response arn",
                api_call(
                    "UpdateSecretVersionStage",
                    json!({ "requestParameters": { "secretId": ARN, "versionStage": "AWSCURRENT" },
                            "responseElements": { "arn": ARN } }),
                ),
                Ok(event(DetailType::ApiCall, &[ARN], None)),
            ),
            (
                "older events spell it aRN",
                api_call(
                    "RotateSecret",
                    json!({ "requestParameters": { "secretId": "mySecret" }, "responseElements": { "aRN": ARN } }),
                ),
                Ok(event(DetailType::ApiCall, &[ARN, "mySecret"], None)),
            ),
            (
                "CreateSecret names the secret",
                api_call(
                    "CreateSecret",
                    json!({ "requestParameters": { "name": "mySecret" } }),
                ),
                Ok(event(DetailType::ApiCall, &["mySecret"], None)),
            ),
            (
                "failed call",
                api_call(
                    "PutSecretValue",
                    json!({ "errorCode": "AccessDenied", "requestParameters": { "secretId": "mySecret" } }),
                ),
                Ok(Parsed::Ignored(Ignored::FailedCall, Some(DetailType::ApiCall))),
            ),
            (
                "read by name",
                api_call(
                    "GetSecretValue",
                    json!({ "requestParameters": { "secretId": "mySecret" } }),
                ),
                Ok(Parsed::Ignored(Ignored::ReadOnly, Some(DetailType::ApiCall))),
            ),
            (
                "readOnly flag",
                api_call(
                    "SomethingNew",
                    json!({ "readOnly": true, "requestParameters": { "secretId": "mySecret" } }),
                ),
                Ok(Parsed::Ignored(Ignored::ReadOnly, Some(DetailType::ApiCall))),
            ),
            (
                "service event",
                service("SecretId"),
                Ok(event(DetailType::ServiceEvent, &[ARN], None)),
            ),
            (
                "service event, other casing",
                service("secretId"),
                Ok(event(DetailType::ServiceEvent, &[ARN], None)),
            ),
            (
                "another service",
                json!({ "source": "aws.rds", "detail-type": "RDS DB Instance Event", "detail": {} })
                    .to_string(),
                Ok(Parsed::Ignored(Ignored::OtherSource, None)),
            ),
            (
                "another detail type of Secrets Manager",
                envelope("Something New", json!({}), json!([])),
                Ok(Parsed::Ignored(Ignored::OtherSource, None)),
            ),
            ("not JSON", "{\"detail-type\": ".into(), Err(Malformed("not JSON"))),
            ("a JSON array", "[1]".into(), Err(Malformed("not a JSON object"))),
            (
                "no detail-type",
                json!({ "source": "aws.secretsmanager" }).to_string(),
                Err(Malformed("no source or detail-type")),
            ),
            (
                "detail is a string",
                json!({ "source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "detail": "x" })
                    .to_string(),
                Err(Malformed("no detail object")),
            ),
            (
                "API call naming no secret",
                api_call("PutSecretValue", json!({ "requestParameters": {} })),
                Err(Malformed("names no secret")),
            ),
            (
                "secret id is a number",
                api_call("PutSecretValue", json!({ "requestParameters": { "secretId": 7 } })),
                Err(Malformed("names no secret")),
            ),
            (
                "bad time",
                json!({ "source": "aws.secretsmanager", "detail-type": "Secret Label Updated",
                        "time": "yesterday", "resources": [ARN], "detail": { "labelUpdated": "AWSCURRENT" } })
                    .to_string(),
                Err(Malformed("time is not an RFC 3339 timestamp")),
            ),
        ];
        for (what, body, want) in cases {
            assert_eq!(parse(&body), want, "{what}");
        }
    }

    #[test]
    fn sns_notifications_are_unwrapped() {
        let inner = envelope(
            "Secret Label Updated",
            json!({ "name": "mySecret", "labelUpdated": "AWSCURRENT", "versionId": "v-2" }),
            json!([ARN]),
        );
        let sns = json!({ "Type": "Notification", "MessageId": "m", "Message": inner }).to_string();
        assert_eq!(
            parse(&sns),
            Ok(event(
                DetailType::LabelUpdated,
                &[ARN, "mySecret"],
                Some("v-2")
            ))
        );
        let broken = json!({ "Type": "Notification", "Message": "{" }).to_string();
        assert_eq!(parse(&broken), Err(Malformed("SNS Message is not JSON")));
    }

    #[test]
    fn names_and_regions_from_arns() {
        assert_eq!(names_in_arn(ARN), vec!["mySecret", "mySecret-a1b2c3"]);
        // A partial ARN (no suffix) is the name itself.
        assert_eq!(
            names_in_arn("arn:aws:secretsmanager:us-west-2:012345678901:secret:rdscred/db/app"),
            vec!["rdscred/db/app"]
        );
        // rds!db-… names survive.
        assert_eq!(
            names_in_arn("arn:aws:secretsmanager:us-east-1:1:secret:rds!db-0a1b2c3d-Zz9Yy8"),
            vec!["rds!db-0a1b2c3d", "rds!db-0a1b2c3d-Zz9Yy8"]
        );
        assert!(names_in_arn("mySecret").is_empty());
        assert!(names_in_arn("arn:aws:sqs:us-east-1:1:q").is_empty());
        assert_eq!(arn_region(ARN), Some("us-west-2"));
        assert_eq!(arn_region("mySecret"), None);
    }
}
