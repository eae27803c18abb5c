//! Secrets Manager resource policies: read, validate, put (always with `BlockPublicPolicy`),
//! delete. What to put is decided in [`crate::access`]; this is I/O only.
//!
//! Replicas: Secrets Manager copies the primary's resource policy to its replicas and refuses
//! policy calls on a replica, so only the primary is ever written.

use serde_json::Value;

use super::secrets::Secrets;
use super::{AwsError, call};

const SERVICE: &str = "secretsmanager";

/// ValidateResourcePolicy's verdict: passed, or the checks that failed (`check: message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validation {
    Passed,
    Failed(Vec<String>),
}

impl Secrets {
    /// GetResourcePolicy: the policy text on the secret, `None` when it has none.
    pub async fn resource_policy(&self, id: &str) -> Result<Option<String>, AwsError> {
        let request = self.client.get_resource_policy().secret_id(id).send();
        let out = call(&self.calls, SERVICE, "GetResourcePolicy", id, request).await?;
        Ok(out
            .resource_policy()
            .filter(|p| !p.trim().is_empty())
            .map(str::to_string))
    }

    /// ValidateResourcePolicy for the secret (`SecretId` given: it is authorized on the secret,
    /// and the check includes whether the policy would grant broad access to it).
    pub async fn validate_resource_policy(
        &self,
        id: &str,
        policy: &Value,
    ) -> Result<Validation, AwsError> {
        let request = self
            .client
            .validate_resource_policy()
            .secret_id(id)
            .resource_policy(policy.to_string())
            .send();
        let out = call(&self.calls, SERVICE, "ValidateResourcePolicy", id, request).await?;
        if out.policy_validation_passed() {
            return Ok(Validation::Passed);
        }
        let errors = out
            .validation_errors()
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.check_name().unwrap_or("check"),
                    e.error_message().unwrap_or("failed")
                )
            })
            .collect::<Vec<_>>();
        Ok(Validation::Failed(if errors.is_empty() {
            vec!["the policy did not pass validation".into()]
        } else {
            errors
        }))
    }

    /// PutResourcePolicy with `BlockPublicPolicy`: AWS refuses a policy that grants broad
    /// access (and the controller's IAM policy allows the call only with it set).
    pub async fn put_resource_policy(&self, id: &str, policy: &Value) -> Result<(), AwsError> {
        let request = self
            .client
            .put_resource_policy()
            .secret_id(id)
            .resource_policy(policy.to_string())
            .block_public_policy(true)
            .send();
        call(&self.calls, SERVICE, "PutResourcePolicy", id, request)
            .await
            .map(drop)
    }

    /// DeleteResourcePolicy.
    pub async fn delete_resource_policy(&self, id: &str) -> Result<(), AwsError> {
        let request = self.client.delete_resource_policy().secret_id(id).send();
        call(&self.calls, SERVICE, "DeleteResourcePolicy", id, request)
            .await
            .map(drop)
    }
}
