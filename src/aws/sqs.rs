//! SQS: the queue the EventBridge rule delivers Secrets Manager events to. Only the three
//! operations the documented IAM statement grants: GetQueueAttributes, ReceiveMessage and
//! DeleteMessage (DeleteMessageBatch is authorised as `sqs:DeleteMessage`).

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::{ApiCalls, AwsError, call};

const SERVICE: &str = "sqs";
/// ReceiveMessage and DeleteMessageBatch take at most 10 messages.
pub const MAX_BATCH: usize = 10;

/// What GetQueueAttributes tells the consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueAttributes {
    pub arn: String,
    /// How long a received message stays invisible to other receives: the consumer's budget
    /// for handling it.
    pub visibility_timeout: Duration,
}

/// One received message. The body is an EventBridge envelope (metadata, never a secret value).
#[derive(Clone, Debug)]
pub struct QueueMessage {
    pub id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How often SQS has handed this message out (1 on first delivery).
    pub receive_count: u32,
}

/// The event queue, with the client of its region and credentials.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    calls: ApiCalls,
    url: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Queue {
    pub(crate) fn new(client: Client, calls: ApiCalls, url: String) -> Queue {
        Queue { client, calls, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// GetQueueAttributes (QueueArn, VisibilityTimeout): proves the queue exists and is
    /// readable with our credentials.
    pub async fn attributes(&self) -> Result<QueueAttributes, AwsError> {
        let request = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send();
        let out = call(
            &self.calls,
            SERVICE,
            "GetQueueAttributes",
            &self.url,
            request,
        )
        .await?;
        let attrs = out.attributes();
        let get = |name: QueueAttributeName| attrs.and_then(|a| a.get(&name)).cloned();
        let visibility = get(QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u64>().ok())
            // SQS's default, should the attribute be missing.
            .unwrap_or(30);
        Ok(QueueAttributes {
            arn: get(QueueAttributeName::QueueArn).unwrap_or_default(),
            visibility_timeout: Duration::from_secs(visibility),
        })
    }

    /// ReceiveMessage: long-polls up to `wait` (whole seconds, at most 20) for up to `max`
    /// (at most 10) messages.
    pub async fn receive(&self, wait: Duration, max: usize) -> Result<Vec<QueueMessage>, AwsError> {
        let request = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let out = call(&self.calls, SERVICE, "ReceiveMessage", &self.url, request).await?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(QueueMessage {
                    id: m.message_id()?.to_string(),
                    receipt_handle: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                })
            })
            .collect())
    }

    /// DeleteMessageBatch, 10 at a time. Returns how many entries SQS refused (e.g. a receipt
    /// handle that is no longer valid); a failed call is an error.
    pub async fn delete(&self, messages: &[&QueueMessage]) -> Result<usize, AwsError> {
        let mut refused = 0;
        for chunk in messages.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt_handle)
                        .build()
                        .map_err(|e| AwsError::InvalidRequest {
                            operation: "DeleteMessageBatch",
                            detail: e.to_string(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let request = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send();
            let out = call(
                &self.calls,
                SERVICE,
                "DeleteMessageBatch",
                &self.url,
                request,
            )
            .await?;
            refused += out.failed().len();
        }
        Ok(refused)
    }
}

/// The region in a standard queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`), if any.
pub fn region_of_queue_url(url: &str) -> Option<&str> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut labels = host.split('.');
    match (labels.next(), labels.next()) {
        (Some("sqs"), Some(region)) if region.contains('-') => Some(region),
        _ => None,
    }
}

/// The queue's ARN from its URL (`arn:PARTITION:sqs:REGION:ACCOUNT:NAME`), for the IAM policy.
/// `None` when the URL does not name region, account and queue.
pub fn queue_arn_from_url(url: &str, partition: &str) -> Option<String> {
    let region = region_of_queue_url(url)?;
    let path: Vec<&str> = url.split("://").nth(1)?.split('/').skip(1).collect();
    match path.as_slice() {
        [account, name] if !account.is_empty() && !name.is_empty() => {
            Some(format!("arn:{partition}:sqs:{region}:{account}:{name}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_and_arn_from_queue_urls() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/rdscred-events";
        assert_eq!(region_of_queue_url(url), Some("eu-west-1"));
        assert_eq!(
            queue_arn_from_url(url, "aws").as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:rdscred-events")
        );
        let cn = "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q";
        assert_eq!(
            queue_arn_from_url(cn, "aws-cn").as_deref(),
            Some("arn:aws-cn:sqs:cn-north-1:123456789012:q")
        );
        // Emulators and VPC endpoints name no region.
        assert_eq!(
            region_of_queue_url("http://127.0.0.1:5000/123456789012/q"),
            None
        );
        assert_eq!(
            queue_arn_from_url("http://127.0.0.1:5000/123456789012/q", "aws"),
            None
        );
        assert_eq!(region_of_queue_url("not a url"), None);
        assert_eq!(
            queue_arn_from_url("https://sqs.us-east-1.amazonaws.com/", "aws"),
            None
        );
    }
}
