"""One AWS query-API call, signed with botocore's SigV4, printing the raw answer body.

usage: aws_raw.py ENDPOINT KEY SECRET SERVICE FORM   (FORM: e.g. Action=DescribeInstanceTypes&Version=2016-11-15)
"""
import sys
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

endpoint, key, secret, service, form = sys.argv[1:6]
request = AWSRequest(method="POST", url=endpoint + "/", data=form,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
SigV4Auth(Credentials(key, secret), service, "us-east-1").add_auth(request)
prepared = request.prepare()
req = urllib.request.Request(prepared.url, data=prepared.body.encode() if isinstance(prepared.body, str) else prepared.body,
                             headers=dict(prepared.headers), method="POST")
with urllib.request.urlopen(req, timeout=60) as r:
    sys.stdout.buffer.write(r.read())
