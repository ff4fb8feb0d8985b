"""Change what a moto account has, as its owner would (boto3 with the account's own key).

usage: aws_admin.py ENDPOINT KEY SECRET COMMAND [ARG...]

  create-buckets PREFIX N   create buckets PREFIX-0 … PREFIX-(N-1)
  delete-bucket NAME        delete one (empty) bucket
  run-instances N           launch N instances in us-east-1
  terminate-instance ID     terminate one (EC2 keeps listing it, as `terminated`)

Prints one JSON line: what it did.
"""
import json
import sys

import boto3

endpoint, key, secret, command, *args = sys.argv[1:]


def client(service):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


if command == "create-buckets":
    prefix, n = args[0], int(args[1])
    s3 = client("s3")
    names = [f"{prefix}-{i}" for i in range(n)]
    for name in names:
        s3.create_bucket(Bucket=name)
    print(json.dumps({"created": names}))
elif command == "delete-bucket":
    client("s3").delete_bucket(Bucket=args[0])
    print(json.dumps({"deleted": args[0]}))
elif command == "run-instances":
    ec2 = client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    got = ec2.run_instances(ImageId=image, MinCount=int(args[0]), MaxCount=int(args[0]), InstanceType="t2.micro")
    print(json.dumps({"instances": [i["InstanceId"] for i in got["Instances"]]}))
elif command == "terminate-instance":
    got = client("ec2").terminate_instances(InstanceIds=[args[0]])
    print(json.dumps({"terminated": [i["InstanceId"] for i in got["TerminatingInstances"]]}))
else:
    sys.exit(f"unknown command {command}")
