"""cloud_runners.s3_staging: one job run's local folder and its local -> S3 map (moto)."""
from __future__ import annotations

import pytest
from support import moto_session

from cloud_runners import aws
from cloud_runners.s3_staging import OBJECT, PREFIX, S3Staging
from harness import uris
from harness.errors import HarnessError

BUCKET = "staging-test-bucket"


@pytest.fixture()
def s3(monkeypatch):
    with moto_session(monkeypatch) as session:
        client = session.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="code/job.py", Body=b"print('hi')\n")
        client.put_object(Bucket=BUCKET, Key="raw/train/part-0.parquet", Body=b"a")
        client.put_object(Bucket=BUCKET, Key="raw/test/part-0.parquet", Body=b"bb")
        client.put_object(Bucket=BUCKET, Key="raw/", Body=b"")  # a folder placeholder
        yield client


def test_download_an_object_and_a_prefix_and_name_them_back(s3, tmp_path):
    with S3Staging(s3, prefix="t-", dir=tmp_path) as staging:
        assert staging.root.parent == tmp_path and staging.root.name.startswith("t-")
        assert staging.kind(f"s3://{BUCKET}/code/job.py") == OBJECT
        assert staging.kind(f"s3://{BUCKET}/raw") == PREFIX
        assert staging.kind(f"s3://{BUCKET}/none") is None
        script = staging.download(f"s3://{BUCKET}/code/job.py", "code/job.py")
        assert script == staging.root / "code" / "job.py"
        assert script.read_text() == "print('hi')\n"
        raw = staging.download(f"s3://{BUCKET}/raw", "raw")
        assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()) \
            == ["test/part-0.parquet", "train/part-0.parquet"]
        out = staging.local_uri("out", f"s3://{BUCKET}/processed/")
        assert out == uris.file_uri(staging.root / "out")

        message = (f"cannot read {uris.file_uri(raw / 'train')}: {raw}/test is bad; "
                   f"{script} failed; writing {out}/part-1")
        assert staging.s3_names(message) == (
            f"cannot read s3://{BUCKET}/raw/train: s3://{BUCKET}/raw/test is bad; "
            f"s3://{BUCKET}/code/job.py failed; writing s3://{BUCKET}/processed/part-1")
        error = HarnessError("not a Parquet file", file=str(raw / "train" / "part-0.parquet"))
        assert staging.error_message(error) == \
            f"s3://{BUCKET}/raw/train/part-0.parquet: not a Parquet file."
        assert staging.error_message(ValueError(f"bad {raw}")) == \
            f"ValueError: bad s3://{BUCKET}/raw"
        root = staging.root
    assert not root.exists()  # the temporary folder goes with the block


def test_upload_a_file_and_a_folder(s3, tmp_path):
    with S3Staging(s3, dir=tmp_path) as staging:
        out = staging.path("out")
        (out / "sub").mkdir(parents=True)
        (out / "a.json").write_text("{}")
        (out / "sub" / "b.txt").write_text("b")
        seen = []
        written = staging.upload(out, f"s3://{BUCKET}/result/", on_file=seen.append)
        assert written == [f"s3://{BUCKET}/result/a.json", f"s3://{BUCKET}/result/sub/b.txt"]
        assert seen == [out / "a.json", out / "sub" / "b.txt"]
        assert staging.upload(out / "a.json", f"s3://{BUCKET}/one.json") == \
            [f"s3://{BUCKET}/one.json"]
        assert sorted(aws.list_keys(s3, f"s3://{BUCKET}/result")) == \
            ["result/a.json", "result/sub/b.txt"]
        assert staging.s3_names(f"{out}/sub/b.txt") == f"s3://{BUCKET}/result/sub/b.txt"
        with pytest.raises(HarnessError, match="nothing to upload"):
            staging.upload(staging.path("none"), f"s3://{BUCKET}/x")


def test_missing_data_is_named_by_its_s3_uri_unless_optional(s3, tmp_path):
    with S3Staging(s3, dir=tmp_path) as staging:
        missing = f"s3://{BUCKET}/training/none"
        with pytest.raises(HarnessError, match=f"{missing}: nothing in S3"):
            staging.download(missing, "a")
        with pytest.raises(HarnessError, match="object not found in S3"):
            staging.download(missing, "b", kind=OBJECT)
        with pytest.raises(HarnessError, match="no data under this S3 prefix"):
            staging.download(missing, "c", kind=PREFIX)
        # Optional: the path stands for the URI, nothing is created.
        path = staging.download(missing, "d", kind=PREFIX, required=False)
        assert not path.exists() and staging.s3_names(str(path)) == missing
        # An object asked for as a prefix is not there as a prefix.
        path = staging.download(f"s3://{BUCKET}/code/job.py", "e", kind=PREFIX,
                                required=False)
        assert not path.exists()
        with pytest.raises(HarnessError, match="relative path"):
            staging.path("../escape")


def test_each_staging_has_its_own_map_and_a_given_root_is_kept(s3, tmp_path):
    a = S3Staging(s3, root=tmp_path / "a")
    b = S3Staging(s3, root=tmp_path / "b")
    a.download(f"s3://{BUCKET}/code/job.py", "job.py")
    b.download(f"s3://{BUCKET}/raw/train", "job.py")
    assert a.s3_names(str(a.path("job.py"))) == f"s3://{BUCKET}/code/job.py"
    assert b.s3_names(str(b.path("job.py"))) == f"s3://{BUCKET}/raw/train"
    assert a.s3_names(str(b.path("job.py"))) == str(b.path("job.py"))
    a.cleanup()
    assert (tmp_path / "a" / "job.py").is_file()
