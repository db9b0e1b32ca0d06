"""The project's bucket on moto: guardrails set where an emulator ignored the template,
and emptied (every version, every delete marker) for teardown."""
from cloud_runners.bucket import empty_bucket, ensure_bucket_guardrails

BUCKET = "mlharness-bucket-test"


def test_guardrails_set_once(aws, cfg):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.delete_bucket_encryption(Bucket=BUCKET)  # moto encrypts new buckets by default
    fixed = ensure_bucket_guardrails(cfg, aws, BUCKET)
    assert fixed == [f"bucket {BUCKET}: public access block set",
                     f"bucket {BUCKET}: default encryption (SSE-S3) set",
                     f"bucket {BUCKET}: versioning enabled"]
    pab = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    rule, = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert ensure_bucket_guardrails(cfg, aws, BUCKET) == []  # nothing left to set


def test_empty_bucket_deletes_every_version_and_marker(aws, cfg):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"1", b"2"):  # two versions of one key
        s3.put_object(Bucket=BUCKET, Key="mlharness/runs/r1/data/raw/a.gz", Body=body)
    s3.put_object(Bucket=BUCKET, Key="mlharness/runs/r1/code/x.tar.gz", Body=b"x")
    s3.delete_object(Bucket=BUCKET, Key="mlharness/runs/r1/code/x.tar.gz")  # a delete marker
    assert empty_bucket(cfg, aws, BUCKET) == 4
    listed = s3.list_object_versions(Bucket=BUCKET)
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")
    s3.delete_bucket(Bucket=BUCKET)  # only an empty bucket can be deleted
