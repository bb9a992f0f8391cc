"""Prepare a fresh moto server for pagelog's S3 tests (used by .ci/run).

moto is started with INITIAL_NO_AUTH_ACTION_COUNT=4, so these four calls run
unauthenticated and every later request must be signed with a real key:
create the bucket, an IAM user, an inline policy allowing s3:*, and an access
key. Prints "ACCESS_KEY_ID SECRET_ACCESS_KEY" for the tests.

Usage: python moto_setup.py ENDPOINT BUCKET
"""

import json
import sys

import boto3


def main() -> None:
    endpoint, bucket = sys.argv[1], sys.argv[2]
    kw = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    boto3.client("s3", **kw).create_bucket(Bucket=bucket)
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName="pagelog-ci")
    iam.put_user_policy(
        UserName="pagelog-ci",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="pagelog-ci")["AccessKey"]
    print(key["AccessKeyId"], key["SecretAccessKey"])


if __name__ == "__main__":
    main()
