-- CloudTrail Lake: every read of an rdscred secret, newest first. Replace the event data store
-- id and the start time. Add
--   AND userIdentity.sessionContext.sessionIssuer.arn = 'arn:aws:iam::123456789012:role/rdscred-break-glass'
-- for break-glass reads only, or  AND errorCode = 'AccessDenied'  for denied attempts.
SELECT eventTime,
       userIdentity.arn AS caller,
       userIdentity.sessionContext.sessionIssuer.arn AS role,
       element_at(requestParameters, 'secretId') AS secret,
       sourceIPAddress,
       errorCode
FROM <event-data-store-id>
WHERE eventSource = 'secretsmanager.amazonaws.com'
  AND eventName = 'GetSecretValue'
  AND element_at(requestParameters, 'secretId') LIKE '%rdscred/ledger-pg/%'
  AND eventTime > '2026-01-01 00:00:00'
ORDER BY eventTime DESC
