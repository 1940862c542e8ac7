"""Verifies webhook deliveries with the Standard Webhooks reference library.

stdin: {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]}
Each delivery must verify under the secret, and must NOT verify under another secret nor
with its body changed. Prints {"verified": n, "failures": [...]}; exits 1 on any failure.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def refused(hook, body, headers):
    try:
        hook.verify(body, headers)
    except WebhookVerificationError:
        return True
    return False


def main():
    given = json.load(sys.stdin)
    hook = Webhook(given["secret"])
    other = Webhook("whsec_" + base64.b64encode(b"not the secret, 32 bytes long..").decode())
    verified, failures = 0, []
    for i, d in enumerate(given["deliveries"]):
        body, headers = d["body"], d["headers"]
        try:
            payload = hook.verify(body, headers)
        except Exception as err:
            failures.append({"delivery": i, "headers": headers, "error": f"{type(err).__name__}: {err}"})
            continue
        if not isinstance(payload, dict):
            failures.append({"delivery": i, "error": "the body is not a JSON object"})
        elif not refused(other, body, headers):
            failures.append({"delivery": i, "error": "verified under another secret"})
        elif not refused(hook, body + " ", headers):
            failures.append({"delivery": i, "error": "verified with its body changed"})
        else:
            verified += 1
    print(json.dumps({"verified": verified, "failures": failures}))
    sys.exit(1 if failures or not given["deliveries"] else 0)


if __name__ == "__main__":
    main()
