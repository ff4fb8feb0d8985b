"""A captured or altered SigV4 request, as an attacker would send it to `http` bindings.

usage: aws_tamper.py ENDPOINT OTHER_ENDPOINT ACCOUNT SECRET

Signs requests with botocore exactly as an SDK does, then sends: one as signed (from
127.0.0.1); the same bytes again from the same address (an SDK repeating itself); the same
bytes from another address (a replay), to the same binding and to another one; one with an
`x-amz-acl` header added after signing; one whose body was swapped after signing. Prints each
answer's status and `x-skybridge-error` as JSON.
"""
import http.client
import json
import sys
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

endpoint, other, account, secret = sys.argv[1:5]


def signed(method, path, body=b"", content_type=None):
    headers = {"Content-Type": content_type} if content_type else {}
    request = AWSRequest(method=method, url=endpoint + path, data=body, headers=headers)
    S3SigV4Auth(Credentials(account, secret), "s3", "us-east-1").add_auth(request)
    headers = dict(request.prepare().headers)
    headers["Host"] = urlsplit(endpoint).netloc
    return headers


def send(url, method, path, headers, body=b"", source="127.0.0.1"):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    conn.request(method, path, body=body or None, headers=headers)
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return {"status": answer.status, "error": answer.getheader("x-skybridge-error")}


listing = signed("GET", "/")
acl = signed("PUT", "/tampered-acl")
acl["x-amz-acl"] = "public-read"
body = b"<CreateBucketConfiguration/>"
swap = signed("PUT", "/tampered-body", body, "application/xml")
print(json.dumps({
    "first": send(endpoint, "GET", "/", listing),
    "repeated": send(endpoint, "GET", "/", listing),
    "replayed": send(endpoint, "GET", "/", listing, source="127.0.0.77"),
    "elsewhere": send(other, "GET", "/", listing, source="127.0.0.77"),
    "unsigned_acl": send(endpoint, "PUT", "/tampered-acl", acl),
    "swapped_body": send(endpoint, "PUT", "/tampered-body", swap, b"<CreateBucketConfiguratioX/>"),
}))
