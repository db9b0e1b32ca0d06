"""The project's bucket: its guardrails (encryption, versioning, no public access) and
emptying it for teardown."""
from __future__ import annotations

from cloud_runners import aws
from harness.config import PipelineConfig
from harness.errors import HarnessError


def ensure_bucket_guardrails(cfg: PipelineConfig, session, bucket: str) -> list[str]:
    """Check the bucket is encrypted, versioned and blocks public access; set what is not.

    On AWS the template has set all three and this only reads; an emulator that ignores
    some template properties (moto ignores PublicAccessBlockConfiguration and
    VersioningConfiguration) gets them here. Returns what it had to set.
    """
    from botocore.exceptions import ClientError

    s3 = aws.client(session, "s3", cfg)
    fixed = []
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    try:
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError:
        pab = {}
    if not all(pab.get(f) for f in flags):
        s3.put_public_access_block(Bucket=bucket,
                                   PublicAccessBlockConfiguration={f: True for f in flags})
        fixed.append(f"bucket {bucket}: public access block set")
    try:
        s3.get_bucket_encryption(Bucket=bucket)
    except ClientError:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        fixed.append(f"bucket {bucket}: default encryption (SSE-S3) set")
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        fixed.append(f"bucket {bucket}: versioning enabled")
    return fixed



def empty_bucket(cfg: PipelineConfig, session, bucket: str) -> int:
    """Delete every object version and delete marker; return how many."""
    s3 = aws.client(session, "s3", cfg)
    count = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(batch), 1000):
            chunk = batch[i:i + 1000]
            resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            errors = resp.get("Errors", [])
            if errors:
                raise HarnessError(f"could not empty the bucket {bucket}: "
                                   f"{errors[0].get('Key')}: {errors[0].get('Message')}",
                                   hint="run `harness cloud teardown` again")
            count += len(chunk)
    return count
