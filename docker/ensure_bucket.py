"""Create the MLflow artifact bucket in the S3-compatible store when it does not exist.

Run once by the compose file's ``buckets`` service before the tracking server starts. Reads the
endpoint and credentials from the standard variables (``MLFLOW_S3_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) and the bucket name from ``MLFLOW_BUCKET``.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    bucket = os.environ.get("MLFLOW_BUCKET", "mlflow")
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
    for attempt in range(30):  # the store may still be starting
        try:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except (EndpointConnectionError, ClientError) as exc:
            print(f"waiting for the object store ({exc})", flush=True)
            time.sleep(2)
    else:
        print("object store unreachable: check MLFLOW_S3_ENDPOINT_URL and the minio service",
              file=sys.stderr)
        return 1
    if bucket not in names:
        s3.create_bucket(Bucket=bucket)
        print(f"created bucket {bucket}")
    else:
        print(f"bucket {bucket} exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
