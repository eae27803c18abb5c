"""moto's server, made stricter where rdscred depends on AWS refusing something.

moto 5.2.5 stores any string as a secret's resource policy: it does not parse it, ignores
BlockPublicPolicy, does not resolve principals and does not implement ValidateResourcePolicy
(HTTP 500). AWS refuses malformed policies and policies naming a principal that does not exist
(MalformedPolicyDocumentException), refuses public ones with BlockPublicPolicy
(PublicPolicyException) and validates them on request. This wrapper adds those behaviours to
moto's Secrets Manager and then runs moto's server unchanged (same arguments as
`moto_server`).

"Public" here follows the same rule as rdscred's own check (src/access/mod.rs,
`public_statements`): an Allow to every principal (`"*"`, `{"AWS": "*"}`, a wildcard ARN,
NotPrincipal) without an equality condition on a restricting key (aws:PrincipalArn,
aws:PrincipalAccount, aws:PrincipalOrgID, aws:SourceAccount, aws:SourceArn, aws:SourceVpce)
with fixed values. AWS decides it with automated reasoning (Zelkova) and may refuse more. AWS
resolves principals of every account; this wrapper only roles of the secret's own account
(moto's IAM of other accounts is not reachable from here). docs/access.md lists what the tests
can and cannot show.

moto's Secrets Manager store is a dict that its handlers iterate without a lock, and the server
runs each request on its own thread: a ListSecrets or a lookup by ARN racing a CreateSecret fails
with HTTP 500 ("dictionary changed size during iteration"), which AWS never answers to a valid
request. Tests that count requests then see the SDK's retry. Secrets are written by other
services too (RDS creates the managed master user secret), so every action of every service runs
under one lock here, as AWS applies each atomically; only SQS is left out, whose ReceiveMessage
long-polls for up to 20 s (its queues are not shared with the other services' handlers).
"""

import functools
import json
import sys
import threading

from moto.core.responses import BaseResponse
from moto.secretsmanager import models, responses
from moto.sqs.responses import SQSResponse
from moto.secretsmanager.exceptions import SecretsManagerClientError

RESTRICTING_KEYS = {
    "aws:principalarn",
    "aws:principalaccount",
    "aws:principalorgid",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourcevpce",
}


class MalformedPolicyDocument(SecretsManagerClientError):
    def __init__(self, message):
        super().__init__("MalformedPolicyDocumentException", message)


class PublicPolicy(SecretsManagerClientError):
    def __init__(self):
        super().__init__(
            "PublicPolicyException",
            "This resource policy will grant public access to the secret. Use "
            "BlockPublicPolicy=false to attach it anyway.",
        )


def _strings(v):
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [x for x in v if isinstance(x, str)]
    return []


def parse(policy):
    """The policy as a dict, or MalformedPolicyDocumentException like AWS."""
    try:
        doc = json.loads(policy)
    except (TypeError, ValueError) as e:
        raise MalformedPolicyDocument(f"The policy is not valid JSON: {e}")
    if not isinstance(doc, dict) or "Statement" not in doc:
        raise MalformedPolicyDocument("The policy has no Statement.")
    statements = doc["Statement"]
    statements = statements if isinstance(statements, list) else [statements]
    for s in statements:
        if not isinstance(s, dict) or s.get("Effect") not in ("Allow", "Deny"):
            raise MalformedPolicyDocument("Every statement needs Effect Allow or Deny.")
        if "Principal" not in s and "NotPrincipal" not in s:
            raise MalformedPolicyDocument("A resource policy statement needs a Principal.")
    return statements


def public_statements(statements):
    out = []
    for i, s in enumerate(statements):
        if s.get("Effect") != "Allow":
            continue
        p = s.get("Principal")
        everyone = "NotPrincipal" in s or p == "*"
        if isinstance(p, dict):
            everyone = everyone or any(
                "*" in x or "?" in x for v in p.values() for x in _strings(v)
            )
        if not everyone:
            continue
        restricted = False
        for op, keys in (s.get("Condition") or {}).items():
            if op not in ("StringEquals", "ArnEquals", "StringEqualsIgnoreCase"):
                continue
            for key, v in (keys or {}).items():
                values = _strings(v)
                if (
                    key.lower() in RESTRICTING_KEYS
                    and values
                    and all("*" not in x and "?" not in x for x in values)
                ):
                    restricted = True
        if not restricted:
            out.append(s.get("Sid") or f"#{i}")
    return out


def unknown_principals(statements, account_id):
    """Role ARNs of the secret's own account that moto's IAM does not know. AWS resolves every
    principal when a policy is put; moto keeps one IAM per account, and only the secret's own
    can be looked up here, so principals of other accounts are accepted unchecked."""
    from moto.iam.models import iam_backends

    iam = iam_backends[account_id]["global"]
    known = {r.arn for r in iam.get_roles()}
    out = []
    for s in statements:
        p = s.get("Principal")
        for arn in _strings(p.get("AWS")) if isinstance(p, dict) else []:
            if arn.startswith(f"arn:aws:iam::{account_id}:role/") and arn not in known:
                out.append(arn)
    return out


_put = models.SecretsManagerBackend.put_resource_policy


def put_resource_policy(self, secret_id, policy, block_public_policy=False):
    statements = parse(policy)
    if block_public_policy and public_statements(statements):
        raise PublicPolicy()
    if unknown_principals(statements, self.account_id):
        raise MalformedPolicyDocument("This resource policy contains an unsupported principal.")
    return _put(self, secret_id, policy)


def validate_resource_policy(self, secret_id, policy):
    if secret_id and not self._is_valid_identifier(secret_id):
        raise models.SecretNotFoundException()
    statements = parse(policy)
    public = public_statements(statements)
    return {
        "PolicyValidationPassed": not public,
        "ValidationErrors": [
            {
                "CheckName": "BROAD_ACCESS",
                "ErrorMessage": f"statement {sid} grants access to every principal",
            }
            for sid in public
        ],
    }


def put_resource_policy_response(self):
    secret_id = self._get_param("SecretId")
    policy = self._get_param("ResourcePolicy")
    block = bool(self._get_param("BlockPublicPolicy"))
    arn, name = self.backend.put_resource_policy(secret_id, policy, block)
    return json.dumps({"ARN": arn, "Name": name})


def validate_resource_policy_response(self):
    return json.dumps(
        self.backend.validate_resource_policy(
            self._get_param("SecretId"), self._get_param("ResourcePolicy")
        )
    )


models.SecretsManagerBackend.put_resource_policy = put_resource_policy
models.SecretsManagerBackend.validate_resource_policy = validate_resource_policy
responses.SecretsManagerResponse.put_resource_policy = put_resource_policy_response
responses.SecretsManagerResponse.validate_resource_policy = validate_resource_policy_response

_action_lock = threading.RLock()  # re-entered by services whose call_action calls the base one
_call_action = BaseResponse.call_action


@functools.wraps(_call_action)
def call_action_atomically(self):
    if isinstance(self, SQSResponse):
        return _call_action(self)
    with _action_lock:
        return _call_action(self)


BaseResponse.call_action = call_action_atomically

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
