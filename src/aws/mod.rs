//! AWS access: Secrets Manager and RDS, plus the optional SQS event queue. A thin, typed layer: every SDK call goes
//! through [`call`], which counts it in [`ApiCalls`] and maps the service error code to an
//! [`AwsError`]. No reconcile logic lives here.
//!
//! - [`Aws`]: the base configuration (standard provider chain: env, IRSA web identity, EKS Pod
//!   Identity, profile; ring-based rustls; standard retries with jittered backoff) and a cache
//!   of clients per (region, role to assume);
//! - [`secrets`]: Secrets Manager ([`Secrets`], [`SecretMeta`]); [`rds`]: endpoint discovery;
//! - [`sqs`]: the queue EventBridge delivers Secrets Manager events to ([`Queue`]);
//! - [`policy`]: the secret's resource policy (who may read it);
//! - [`ownership`]: the tags naming the RdsCredential a secret belongs to;
//! - [`calls`]: the API call counters the telemetry module exports.
//!
//! Nothing here logs or `Debug`-prints a request input or a secret value: error details hold
//! only the service's error code and message (which never echo SecretString).

pub mod cache;
pub mod calls;
mod listing;
pub mod ownership;
pub mod policy;
pub mod rds;
pub mod secrets;
pub mod sqs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

pub use calls::{ApiCalls, RecordedRequest, RequestLog};
pub use rds::{DbEndpointInfo, Rds};
pub use secrets::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, NewSecret, RotationRules, SecretMeta, SecretVersion,
    Secrets, VersionSelector,
};
pub use sqs::Queue;

/// Session name of every AssumeRole rdscred makes (visible in CloudTrail).
pub const SESSION_NAME: &str = "rdscred";

/// Attempts per operation (first try included) with the SDK's standard retry mode: exponential
/// backoff with full jitter, throttling and transient errors only. The controller requeues
/// with its own backoff on top.
pub const MAX_ATTEMPTS: u32 = 4;

/// The standard mode's backoff before the second attempt; it doubles per attempt up to
/// [`RETRY_MAX_BACKOFF`].
pub const RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait before attempt `attempt + 1` of a call whose retries are ours rather than the
/// SDK's (CreateSecret, paced by the client-side rate limit): the standard mode's exponential
/// schedule, before jitter.
pub fn retry_backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    RETRY_INITIAL_BACKOFF
        .saturating_mul(1 << doublings)
        .min(RETRY_MAX_BACKOFF)
}

/// Where and how to reach AWS.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// Endpoint override for both services (moto, LocalStack). With an override and no
    /// `AWS_ACCESS_KEY_ID` in the environment, static dummy credentials are used.
    pub endpoint_url: Option<String>,
    /// Region when an RdsDatabase names none. Empty: the provider chain's region, else us-east-1.
    pub default_region: String,
}

/// Shared AWS access: base configuration plus a cache of clients per (region, role).
#[derive(Clone)]
pub struct Aws {
    base: SdkConfig,
    default_region: String,
    calls: ApiCalls,
    scopes: Arc<Mutex<HashMap<ScopeKey, AwsScope>>>,
}

/// (region, role ARN).
type ScopeKey = (String, Option<String>);

/// Clients for one region, with the credentials of one role (or the controller's own).
#[derive(Clone)]
pub struct AwsScope {
    pub secrets: Secrets,
    pub rds: Rds,
    pub region: String,
}

impl std::fmt::Debug for AwsScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsScope")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// Loads the standard provider chain (env, web identity/IRSA, EKS Pod Identity / container
    /// credentials, profile, IMDS). Credentials are resolved lazily, on the first call.
    pub async fn new(settings: AwsSettings, calls: ApiCalls) -> Aws {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let retry = RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(RETRY_INITIAL_BACKOFF)
            .with_max_backoff(RETRY_MAX_BACKOFF);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .retry_config(retry)
            .timeout_config(timeouts);
        if !settings.default_region.is_empty() {
            loader = loader.region(Region::new(settings.default_region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url.clone());
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                loader = loader.credentials_provider(Credentials::new(
                    "testing",
                    "testing",
                    None,
                    None,
                    "rdscred-emulator",
                ));
            }
        }
        let base = loader.load().await;
        let default_region = base
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        Aws {
            base,
            default_region,
            calls,
            scopes: Arc::default(),
        }
    }

    /// The API call counters every scope records into.
    pub fn calls(&self) -> &ApiCalls {
        &self.calls
    }

    pub fn default_region(&self) -> &str {
        &self.default_region
    }

    /// The base SDK configuration (HTTP client, retries, endpoint override, credentials), for
    /// tests and tools that need another client of the same AWS endpoint.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.base
    }

    /// Clients for `region` (default region if `None`) acting as `role_arn` (AssumeRole with
    /// session name `rdscred`, credentials cached and refreshed by the SDK) or as the
    /// controller itself. Cached per (region, role): cheap after the first call.
    pub async fn scoped(
        &self,
        region: Option<&str>,
        role_arn: Option<&str>,
    ) -> Result<AwsScope, AwsError> {
        let region = region
            .filter(|r| !r.is_empty())
            .unwrap_or(&self.default_region)
            .to_string();
        let role = role_to_assume(role_arn)?.map(str::to_string);
        let key = (region.clone(), role.clone());
        if let Some(scope) = self
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(scope.clone());
        }
        let config = self.config_for(&region, role.as_deref()).await;
        let mut secrets_config = aws_sdk_secretsmanager::config::Builder::from(&config);
        let mut rds_config = aws_sdk_rds::config::Builder::from(&config);
        if let Some(log) = self.calls.request_log() {
            secrets_config = secrets_config.interceptor(log.interceptor(
                "secretsmanager",
                &region,
                role.as_deref(),
            ));
            rds_config = rds_config.interceptor(log.interceptor("rds", &region, role.as_deref()));
            // The AssumeRole provider's own STS client is not ours to intercept: every call of
            // this scope runs on the role's credentials, obtained by AssumeRole(role, rdscred).
            if let Some(role) = &role {
                log.push(RecordedRequest {
                    service: "sts".into(),
                    operation: "AssumeRole".into(),
                    region: region.clone(),
                    role_arn: None,
                    params: serde_json::json!({ "RoleArn": role, "RoleSessionName": SESSION_NAME }),
                    at: std::time::Instant::now(),
                    attempt: 1,
                });
            }
        }
        let scope = AwsScope {
            secrets: Secrets::new(
                aws_sdk_secretsmanager::Client::from_conf(secrets_config.build()),
                self.calls.clone(),
            ),
            rds: Rds::new(
                aws_sdk_rds::Client::from_conf(rds_config.build()),
                self.calls.clone(),
            ),
            region,
        };
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        Ok(scopes.entry(key).or_insert(scope).clone())
    }

    /// The base configuration in `region`, acting as `role` (AssumeRole with session name
    /// `rdscred`, credentials cached and refreshed by the SDK) or as the controller itself.
    async fn config_for(&self, region: &str, role: Option<&str>) -> SdkConfig {
        let mut builder = self.base.to_builder();
        builder.set_region(Some(Region::new(region.to_string())));
        if let Some(role) = role {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name(SESSION_NAME)
                .region(Region::new(region.to_string()))
                .configure(&self.base)
                .build()
                .await;
            builder.set_credentials_provider(Some(SharedCredentialsProvider::new(provider)));
        }
        builder.build()
    }

    /// The event queue at `url`, in `region` (else the one the URL names, else the default
    /// region), read as `role_arn` or as the controller itself. Its attempt timeout leaves
    /// room for a 20-second long poll.
    pub async fn queue(
        &self,
        url: &str,
        region: Option<&str>,
        role_arn: Option<&str>,
    ) -> Result<Queue, AwsError> {
        let region = region
            .filter(|r| !r.is_empty())
            .or_else(|| sqs::region_of_queue_url(url))
            .unwrap_or(&self.default_region)
            .to_string();
        let role = role_to_assume(role_arn)?;
        let config = self.config_for(&region, role).await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(70))
            .build();
        let mut sqs_config = aws_sdk_sqs::config::Builder::from(&config).timeout_config(timeouts);
        // The IAM evaluator in the tests checks queue calls like every other call.
        if let Some(log) = self.calls.request_log() {
            sqs_config = sqs_config.interceptor(log.interceptor("sqs", &region, role));
        }
        let sqs_config = sqs_config.build();
        Ok(Queue::new(
            aws_sdk_sqs::Client::from_conf(sqs_config),
            self.calls.clone(),
            url.to_string(),
        ))
    }
}

/// The role to assume (`None` or empty: the controller's own credentials); refuses what is
/// not an ARN before any STS call.
fn role_to_assume(role_arn: Option<&str>) -> Result<Option<&str>, AwsError> {
    match role_arn.filter(|r| !r.is_empty()) {
        Some(role) if !role.starts_with("arn:") => Err(AwsError::InvalidRequest {
            operation: "AssumeRole",
            detail: format!("{role:?} is not a role ARN"),
        }),
        role => Ok(role),
    }
}

/// A failed AWS call, classified by the service's error code. Never holds a secret value.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{operation}: access denied: {detail}")]
    AccessDenied {
        operation: &'static str,
        detail: String,
    },
    #[error("{operation}: throttled by AWS (retries exhausted)")]
    Throttled { operation: &'static str },
    #[error("KMS: {detail}")]
    Kms { detail: String },
    #[error("{operation}: invalid request: {detail}")]
    InvalidRequest {
        operation: &'static str,
        detail: String,
    },
    #[error("secret {id} is scheduled for deletion")]
    ScheduledForDeletion { id: String },
    #[error("{id} already exists")]
    AlreadyExists { id: String },
    #[error("{operation}: AWS unavailable: {detail}")]
    Transient {
        operation: &'static str,
        detail: String,
    },
    #[error("{operation}: {detail}")]
    Other {
        operation: &'static str,
        detail: String,
    },
}

impl AwsError {
    /// Worth retrying soon without a change anywhere else.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AwsError::Throttled { .. } | AwsError::Transient { .. } | AwsError::Other { .. }
        )
    }

    /// CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AwsError::NotFound { .. } => "AwsResourceNotFound",
            AwsError::AccessDenied { .. } => "AwsAccessDenied",
            AwsError::Throttled { .. } => "AwsThrottled",
            AwsError::Kms { .. } => "KmsError",
            AwsError::InvalidRequest { .. } => "AwsInvalidRequest",
            AwsError::ScheduledForDeletion { .. } => "SecretScheduledForDeletion",
            AwsError::AlreadyExists { .. } => "SecretAlreadyExists",
            AwsError::Transient { .. } => "AwsUnavailable",
            AwsError::Other { .. } => "AwsError",
        }
    }

    /// The outcome label of the call counter.
    fn outcome(&self) -> &'static str {
        match self {
            AwsError::Throttled { .. } => "throttled",
            AwsError::NotFound { .. } => "not_found",
            _ => "error",
        }
    }
}

/// Runs one SDK operation: counts it as (service, operation, outcome) and maps its error.
/// `subject` names what the call is about (a secret id, an instance id) for NotFound /
/// AlreadyExists / ScheduledForDeletion; it must never be a secret value.
pub(crate) async fn call<T, E>(
    calls: &ApiCalls,
    service: &'static str,
    operation: &'static str,
    subject: &str,
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match request.await {
        Ok(out) => {
            calls.record(service, operation, "ok");
            Ok(out)
        }
        Err(err) => {
            let mapped = classify(&err, service, operation, subject);
            calls.record(service, operation, mapped.outcome());
            tracing::debug!(service, operation, subject, reason = mapped.reason(), error = %mapped, "AWS call failed");
            Err(mapped)
        }
    }
}

fn classify<E>(
    err: &SdkError<E, HttpResponse>,
    service: &'static str,
    operation: &'static str,
    subject: &str,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = err.code().unwrap_or_default();
            let message = err.message().unwrap_or_default();
            from_code(code, message, status, service, operation, subject)
        }
        SdkError::TimeoutError(_) => AwsError::Transient {
            operation,
            detail: "request timed out".into(),
        },
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => AwsError::Transient {
            operation,
            detail: DisplayErrorContext(err).to_string(),
        },
        _ => AwsError::Other {
            operation,
            detail: DisplayErrorContext(err).to_string(),
        },
    }
}

/// Maps a service error code (Secrets Manager, RDS, STS) to an [`AwsError`].
fn from_code(
    code: &str,
    message: &str,
    status: u16,
    service: &str,
    operation: &'static str,
    subject: &str,
) -> AwsError {
    let detail = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    let lower = message.to_ascii_lowercase();
    match code {
        "ResourceNotFoundException"
        | "DBInstanceNotFound"
        | "DBInstanceNotFoundFault"
        | "DBClusterNotFoundFault"
        | "DBClusterNotFound"
        | "QueueDoesNotExist"
        | "AWS.SimpleQueueService.NonExistentQueue" => AwsError::NotFound {
            what: format!("{} {subject}", noun(service, operation)),
        },
        "AccessDeniedException"
        | "AccessDenied"
        | "UnauthorizedOperation"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => AwsError::AccessDenied { operation, detail },
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "SlowDown"
        | "ProvisionedThroughputExceededException"
        | "PriorRequestNotComplete"
        | "KmsThrottled"
        | "OverLimit" => AwsError::Throttled { operation },
        "EncryptionFailure"
        | "DecryptionFailure"
        | "KMSInvalidStateException"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSNotFoundException"
        | "KMSInternalException"
        | "KMSKeyNotAccessibleFault"
        | "KMSKeyNotAccessible"
        | "InvalidKMSKeyFault"
        | "KmsAccessDenied"
        | "KmsDisabled"
        | "KmsInvalidState"
        | "KmsNotFound" => AwsError::Kms { detail },
        "ResourceExistsException" => AwsError::AlreadyExists {
            id: subject.to_string(),
        },
        "InvalidRequestException"
            if lower.contains("marked for deletion")
                || lower.contains("scheduled for deletion")
                || lower.contains("marked deleted") =>
        {
            AwsError::ScheduledForDeletion {
                id: subject.to_string(),
            }
        }
        "InvalidRequestException"
        | "InvalidParameterException"
        | "InvalidParameterValue"
        | "InvalidParameterCombination"
        | "ValidationException"
        | "MalformedPolicyDocumentException"
        | "PublicPolicyException"
        | "PreconditionNotMetException"
        | "LimitExceededException"
        | "InvalidNextTokenException" => AwsError::InvalidRequest { operation, detail },
        "InternalServiceError"
        | "InternalFailure"
        | "InternalError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => AwsError::Transient { operation, detail },
        _ if status >= 500 => AwsError::Transient { operation, detail },
        _ => AwsError::Other { operation, detail },
    }
}

/// What a call of `operation` is about, for NotFound messages.
fn noun(service: &str, operation: &str) -> &'static str {
    match (service, operation) {
        ("rds", "DescribeDBInstances") => "DB instance",
        ("rds", "DescribeDBClusters") => "DB cluster",
        ("rds", _) => "RDS resource",
        ("sqs", _) => "SQS queue",
        _ => "secret",
    }
}

/// An SDK timestamp as a jiff timestamp.
pub(crate) fn timestamp(t: &aws_smithy_types::DateTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_retries_back_off_like_the_standard_mode() {
        // (attempt that failed, wait before the next)
        let table = [
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1600),
            (5, 3200),
            (6, 5000),
            (40, 5000),
        ];
        for (attempt, ms) in table {
            assert_eq!(
                retry_backoff(attempt),
                Duration::from_millis(ms),
                "{attempt}"
            );
        }
    }

    #[test]
    fn error_codes_map_to_kinds() {
        let m =
            |code: &str, msg: &str| from_code(code, msg, 400, "secretsmanager", "Op", "my-secret");
        assert!(
            matches!(m("ResourceNotFoundException", ""), AwsError::NotFound { what } if what == "secret my-secret")
        );
        assert!(matches!(
            from_code("DBInstanceNotFound", "", 404, "rds", "DescribeDBInstances", "db1"),
            AwsError::NotFound { what } if what == "DB instance db1"
        ));
        assert!(matches!(
            m("AccessDeniedException", "no"),
            AwsError::AccessDenied { .. }
        ));
        assert!(matches!(
            m("ThrottlingException", ""),
            AwsError::Throttled { .. }
        ));
        assert!(matches!(m("Throttling", ""), AwsError::Throttled { .. }));
        assert!(matches!(
            m("RequestLimitExceeded", ""),
            AwsError::Throttled { .. }
        ));
        assert!(matches!(
            m("DecryptionFailure", "key disabled"),
            AwsError::Kms { .. }
        ));
        assert!(matches!(
            m("KMSInvalidStateException", ""),
            AwsError::Kms { .. }
        ));
        assert!(matches!(
            m(
                "InvalidRequestException",
                "You can't create this secret because a secret with this name is already scheduled for deletion."
            ),
            AwsError::ScheduledForDeletion { .. }
        ));
        assert!(matches!(
            m(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion."
            ),
            AwsError::ScheduledForDeletion { .. }
        ));
        assert!(matches!(
            m("InvalidRequestException", "rotation in progress"),
            AwsError::InvalidRequest { .. }
        ));
        assert!(matches!(
            m("InvalidParameterException", ""),
            AwsError::InvalidRequest { .. }
        ));
        assert!(matches!(
            m("LimitExceededException", ""),
            AwsError::InvalidRequest { .. }
        ));
        assert!(matches!(
            m("ResourceExistsException", ""),
            AwsError::AlreadyExists { .. }
        ));
        let queue = "https://sqs.eu-west-1.amazonaws.com/1/q";
        for code in [
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
        ] {
            assert!(
                matches!(from_code(code, "", 400, "sqs", "ReceiveMessage", queue), AwsError::NotFound { what } if what == format!("SQS queue {queue}")),
                "{code}"
            );
        }
        assert!(matches!(
            from_code("KmsAccessDenied", "", 400, "sqs", "ReceiveMessage", queue),
            AwsError::Kms { .. }
        ));
        assert!(matches!(
            from_code("OverLimit", "", 403, "sqs", "ReceiveMessage", queue),
            AwsError::Throttled { .. }
        ));
        assert!(matches!(
            from_code("Weird", "", 503, "rds", "Op", "x"),
            AwsError::Transient { .. }
        ));
        assert!(matches!(
            from_code("Weird", "", 400, "rds", "Op", "x"),
            AwsError::Other { .. }
        ));
    }

    #[test]
    fn retryable_and_reasons() {
        assert!(
            AwsError::Throttled {
                operation: "ListSecrets"
            }
            .is_retryable()
        );
        assert!(
            AwsError::Transient {
                operation: "X",
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(
            !AwsError::AccessDenied {
                operation: "X",
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(!AwsError::ScheduledForDeletion { id: "s".into() }.is_retryable());
        assert_eq!(
            AwsError::Kms {
                detail: String::new()
            }
            .reason(),
            "KmsError"
        );
        assert_eq!(
            AwsError::NotFound { what: "s".into() }.outcome(),
            "not_found"
        );
    }
}
