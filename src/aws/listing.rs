//! The bulk listing behind change detection (ListSecrets of every secret tagged as ours), with
//! a failed page retried on its own instead of failing the whole poll.

use std::future::Future;
use std::time::Duration;

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::ownership::CLUSTER_TAG;
use super::secrets::SERVICE;
use super::{AwsError, SecretMeta, Secrets, call};

/// ListSecrets page size (the API maximum).
const LIST_PAGE: i32 = 100;
/// Attempts per page (the SDK's own retries of throttling come on top of these).
const PAGE_ATTEMPTS: u32 = 4;
/// Wait before the second attempt of a page; doubled for each further one.
const PAGE_BACKOFF: Duration = Duration::from_millis(250);

impl Secrets {
    /// Bulk change detection: every secret tagged `rdscred.io/cluster=<cluster>`, including
    /// those scheduled for deletion, with their version-to-stage maps. ListSecrets pages of 100
    /// (one call per 100 secrets). The tag filters of ListSecrets match key and value
    /// independently and by prefix, so the exact tag is checked here too. A page that fails
    /// with a retryable error is asked for again (same token, bounded, with backoff): at 5,000
    /// secrets one flaky page out of 50 must not throw away the 49 others.
    pub async fn list_owned(&self, cluster: &str) -> Result<Vec<SecretMeta>, AwsError> {
        let mut out = Vec::new();
        self.for_each_owned(cluster, |meta| out.push(meta)).await?;
        Ok(out)
    }

    /// [`list_owned`](Self::list_owned), handing each secret to `each` as its page arrives
    /// instead of collecting them: a poll at 5,000 secrets then holds one page (100 entries)
    /// at a time rather than all of them.
    pub async fn for_each_owned(
        &self,
        cluster: &str,
        mut each: impl FnMut(SecretMeta),
    ) -> Result<(), AwsError> {
        let filters = vec![
            Filter::builder()
                .key(FilterNameStringType::TagKey)
                .values(CLUSTER_TAG)
                .build(),
            Filter::builder()
                .key(FilterNameStringType::TagValue)
                .values(cluster)
                .build(),
        ];
        let mut next_token: Option<String> = None;
        loop {
            let page = with_page_retries(PAGE_BACKOFF, || {
                let request = self
                    .client
                    .list_secrets()
                    .include_planned_deletion(true)
                    .max_results(LIST_PAGE)
                    .set_filters(Some(filters.clone()))
                    .set_next_token(next_token.clone())
                    .send();
                call(&self.calls, SERVICE, "ListSecrets", cluster, request)
            })
            .await?;
            page.secret_list()
                .iter()
                .map(SecretMeta::from_list_entry)
                .filter(|m| m.tags.get(CLUSTER_TAG).map(String::as_str) == Some(cluster))
                .for_each(&mut each);
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(())
    }
}

/// Runs `attempt` until it succeeds, fails with an error not worth retrying, or
/// [`PAGE_ATTEMPTS`] attempts failed; waits `backoff`, then twice that, … in between.
async fn with_page_retries<T, F, Fut>(backoff: Duration, mut attempt: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut wait = backoff;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() && tries < PAGE_ATTEMPTS => {
                tracing::debug!(error = %e, tries, "ListSecrets page failed; retrying that page");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                tries += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn transient() -> AwsError {
        AwsError::Transient {
            operation: "ListSecrets",
            detail: "502".into(),
        }
    }

    /// (failures before success, error kind, attempts made, succeeded, why)
    type Case = (u32, fn() -> AwsError, u32, bool, &'static str);

    #[tokio::test]
    async fn a_failed_page_is_retried_bounded_and_only_when_retryable() {
        let cases: [Case; 4] = [
            (0, transient, 1, true, "no failure"),
            (
                1,
                transient,
                2,
                true,
                "one failed page: retried, the poll goes on",
            ),
            (9, transient, PAGE_ATTEMPTS, false, "bounded"),
            (
                1,
                || AwsError::AccessDenied {
                    operation: "ListSecrets",
                    detail: "no".into(),
                },
                1,
                false,
                "access denied is not retried",
            ),
        ];
        for (failures, error, want_attempts, want_ok, why) in cases {
            let calls = Cell::new(0u32);
            let started = tokio::time::Instant::now();
            let result = with_page_retries(Duration::from_millis(2), || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n <= failures { Err(error()) } else { Ok(n) } }
            })
            .await;
            assert_eq!(calls.get(), want_attempts, "{why}");
            assert_eq!(result.is_ok(), want_ok, "{why}");
            if want_attempts == PAGE_ATTEMPTS {
                // 2 + 4 + 8 ms of backoff between the four attempts: backed off, not spun.
                assert!(started.elapsed() >= Duration::from_millis(14), "{why}");
            }
        }
    }
}
