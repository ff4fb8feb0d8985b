"""moto (AWS S3 + EC2 + IAM) with real SigV4 checks, for the session-translation tests.

Starts moto on 127.0.0.1 (any free port), then spends the unauthenticated calls that
INITIAL_NO_AUTH_ACTION_COUNT=3 allows on creating an IAM user with an allow-all inline policy
and an access key. From then on moto checks every request's signature against that key.
Prints one JSON line {"port", "access_key", "secret_key"} and serves until stdin closes.
"""
import json
import os
import sys

if os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT") != "3":
    sys.exit("run with INITIAL_NO_AUTH_ACTION_COUNT=3: the first 3 calls create the IAM user")

import boto3
from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
port = server.get_host_and_port()[1]
iam = boto3.client(
    "iam",
    endpoint_url=f"http://127.0.0.1:{port}",
    region_name="us-east-1",
    aws_access_key_id="bootstrap",
    aws_secret_access_key="bootstrap",
)
iam.create_user(UserName="skybridge")
iam.put_user_policy(
    UserName="skybridge",
    PolicyName="all",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ),
)
key = iam.create_access_key(UserName="skybridge")["AccessKey"]
print(json.dumps({"port": port, "access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}), flush=True)
sys.stdin.read()
server.stop()
