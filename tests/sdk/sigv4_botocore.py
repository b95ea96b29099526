"""The Authorization header botocore's SigV4Auth computes for each request case, as a JSON list of strings.

Input: a JSON list of cases, from the file named by argv[1] or else from stdin. Each case has: method, host,
path (as sent on the wire, already percent-encoded), query (raw, without "?"), headers ([[name, value], ...]),
body (text, sent as UTF-8), content_sha256 (true: also send X-Amz-Content-SHA256 of the body, computed here),
access_key_id, secret_access_key, session_token (or null), region, service, amz_date (YYYYMMDDTHHMMSSZ).
"""

import datetime
import hashlib
import json
import sys
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def authorization(case):
    url = f"https://{case['host']}{case['path']}"
    if case.get("query"):
        url += "?" + case["query"]
    body = case["body"].encode("utf-8")
    headers = dict(case["headers"])
    if case.get("content_sha256"):
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    request = AWSRequest(method=case["method"], url=url, data=body, headers=headers)
    credentials = Credentials(case["access_key_id"], case["secret_access_key"], case.get("session_token"))
    # Freeze botocore's clock at the case's signing time (botocore >= 1.40.2 reads it through this function).
    frozen = datetime.datetime.strptime(case["amz_date"], "%Y%m%dT%H%M%SZ")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=frozen):
        botocore.auth.SigV4Auth(credentials, case["service"], case["region"]).add_auth(request)
    return request.headers["Authorization"]


def main():
    source = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    cases = json.load(source)
    json.dump([authorization(case) for case in cases], sys.stdout)
    print()


if __name__ == "__main__":
    main()
