"""An unmodified boto3 application, pointed at a Skybridge `http` binding.

usage: aws_client.py ENDPOINT ACCOUNT SECRET (full | one)

It signs with its Skybridge account (as access key id) and secret, exactly as it would sign
for AWS. `full` runs S3 create-bucket / put / get / list and EC2 describe-images / run /
describe and prints what it got as JSON; `one` makes one S3 call and prints the outcome,
error code and HTTP status included.
"""
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, account, secret, what = sys.argv[1:5]
config = Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=30)


def client(service):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=account,
        aws_secret_access_key=secret,
        config=config,
    )


if what == "one":
    try:
        client("s3").list_buckets()
        print(json.dumps({"ok": True}))
    except ClientError as e:
        print(json.dumps({
            "ok": False,
            "code": e.response["Error"].get("Code"),
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "message": e.response["Error"].get("Message"),
            "skybridge_error": e.response["ResponseMetadata"]["HTTPHeaders"].get("x-skybridge-error"),
        }))
    sys.exit(0)

s3 = client("s3")
s3.create_bucket(Bucket="skybridge-test")
body = b"hello through skybridge\n" * 1000
s3.put_object(Bucket="skybridge-test", Key="dir/greeting.txt", Body=body, ContentType="text/plain")
got = s3.get_object(Bucket="skybridge-test", Key="dir/greeting.txt")["Body"].read()
listed = [o["Key"] for o in s3.list_objects_v2(Bucket="skybridge-test").get("Contents", [])]

ec2 = client("ec2")
image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
run = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
launched = run["Instances"][0]["InstanceId"]
described = [
    i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
]
print(json.dumps({
    "put_get_equal": got == body,
    "listed": listed,
    "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]],
    "launched": launched,
    "described": described,
}))
