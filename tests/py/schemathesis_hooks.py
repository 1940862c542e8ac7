"""schemathesis hooks for tests/api/fuzz.rs: the two rules of the API that a JSON schema
cannot state, applied to generated requests so that every schema-valid request is one the
API must take (the positive-data-acceptance check):

- `expires_at` must be in the future, a scheduled revoke's `effective_at` in the coming
  366 days, and not with `force` (docs/api.md): one outside is moved a day ahead, and a
  scheduled revoke sent without `force`;
- a webhook URL's host must resolve (the broker resolves it at registration): a generated
  host is replaced by 127.0.0.1, keeping scheme, path and query;

and two of the environment, which the spec can only describe: a request's `region` must be
one of the cloud's regions (the fuzzed broker's is `GSB_FUZZ_REGION`): a generated one is
replaced by it; and a project's images page after a `cursor` Glance knows (an image id it
returned): a positive case's generated cursor is dropped.

And what every client does: a new `Idempotency-Key` for each new request (the same key with
another body is refused with 422, as the IETF Idempotency-Key draft says): the generated
key gets a unique prefix, keeping its characters.

One correction of the tool: for an operation whose body is optional (approve, deny,
cancel), schemathesis 4.32 sometimes labels a case with no body and nothing else changed as
negative ("Invalid component: positive test case"), then expects it refused. Where the case
can be seen before it is sent, it gets a body invalid for real (`comment` not a string);
where it cannot (the fuzzing phase), `filter_failure` drops exactly that failure: a "negative"
case on those routes carrying no body, no query and no header but the credential (and the
Idempotency-Key map_case gives every request), which the spec says is valid. Every other failure stands.

Everything else generated from the spec is sent as it is. `map_case` runs in every phase.
"""

import os
import re
import uuid
from datetime import datetime, timedelta, timezone

import schemathesis

URL = re.compile(r"^(https?)://[^\s/?#@]+(.*)$", re.S)


OPTIONAL_BODY = re.compile(r"^/v1/(share-requests/\{id\}/(approve|deny|cancel)|reconcile)$")


def is_negative(case):
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return bool(getattr(mode, "is_negative", False))


@schemathesis.hook
def map_case(context, case):
    if is_negative(case) and OPTIONAL_BODY.match(case.operation.path) and not isinstance(case.body, dict):
        case.body = {"comment": 0}
        case.media_type = "application/json"
    case.body = body_of(case.operation, case.body)
    if (
        case.operation.path == "/v1/projects/{project_id}/images"
        and isinstance(case.query, dict)
        and not is_negative(case)
    ):
        case.query = {k: v for k, v in case.query.items() if k != "cursor"}
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[\x21-\x7e]{1,255}", key):
        case.headers = {**headers, "Idempotency-Key": (uuid.uuid4().hex + key)[:255]}
    return case


def body_of(operation, body):
    if not isinstance(body, dict) or operation is None:
        return body
    if operation.method.upper() == "POST" and operation.path == "/v1/share-requests":
        if isinstance(body.get("region"), str):
            body = {**body, "region": os.environ.get("GSB_FUZZ_REGION", "RegionOne")}
        at = body.get("expires_at")
        if isinstance(at, str):
            try:
                when = datetime.fromisoformat(at.replace("Z", "+00:00"))
            except ValueError:
                return body
            if when.tzinfo is None or when <= datetime.now(timezone.utc) + timedelta(minutes=5):
                body = {**body, "expires_at": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()}
    if operation.method.upper() == "POST" and operation.path == "/v1/shares/{id}/revoke":
        at = body.get("effective_at")
        if isinstance(at, str):
            try:
                when = datetime.fromisoformat(at.replace("Z", "+00:00"))
            except ValueError:
                return body
            now = datetime.now(timezone.utc)
            if when.tzinfo is None or not now + timedelta(minutes=5) < when < now + timedelta(days=365):
                body = {**body, "effective_at": (now + timedelta(days=1)).isoformat()}
            # A scheduled revoke is never forced (the field says so; a schema cannot).
            body = {k: v for k, v in body.items() if k != "force"}
    if operation.path.startswith("/v1/webhooks") and isinstance(body.get("url"), str):
        m = URL.match(body["url"])
        if m:
            body = {**body, "url": f"{m.group(1)}://127.0.0.1{m.group(2)}"}
    return body


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """False (drop) only for the tool's mislabelled positive case described above."""
    if type(failure).__name__ != "AcceptedNegativeData" or not OPTIONAL_BODY.match(case.operation.path):
        return True
    # The Idempotency-Key is map_case's own (every request gets a fresh one).
    extra_headers = {
        k for k in (case.headers or {}) if k.lower() not in ("authorization", "x-auth-token", "idempotency-key")
    }
    has_body = type(case.body).__name__ != "NotSet"
    return bool(extra_headers or case.query or has_body)
