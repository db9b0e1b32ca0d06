"""Is there an AWS account to talk to: no credentials -> exit 2 before any call; rejected
credentials and unknown regions are named."""
import boto3
import pytest
from cloud_support import REGION, answer

from cloud_runners import aws as aws_mod
from cloud_runners.credentials import (
    NO_CREDENTIALS_MESSAGE,
    NoCredentials,
    check_region,
    require_credentials,
)
from harness.errors import ConfigError, HarnessError


def test_no_credentials_exit_2_before_any_call(no_aws, cfg):
    with pytest.raises(NoCredentials) as exc:
        require_credentials(cfg, aws_mod.session_for(cfg))
    assert exc.value.exit_code == 2
    assert NO_CREDENTIALS_MESSAGE in exc.value.message
    assert "nothing was created" in exc.value.message
    assert no_aws == []


def test_identity_is_account_and_arn_only(aws, cfg):
    ident = require_credentials(cfg, aws)
    assert ident == {"Account": "123456789012", "Arn": "arn:aws:sts::123456789012:user/moto"}


def test_rejected_credentials_are_named(aws, cfg):
    answer(aws, "sts.GetCallerIdentity",
           {"Error": {"Code": "ExpiredToken", "Message": "The security token has expired"}},
           status=403)
    with pytest.raises(HarnessError) as exc:
        require_credentials(cfg, aws)
    assert "AWS rejected the credentials (ExpiredToken)" in exc.value.message
    assert "nothing was created" in exc.value.message


def test_region_without_sagemaker(aws, cfg):
    assert check_region(cfg, aws) == REGION
    cfg.cloud.region = "mars-north-1"
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="mars-north-1")
    with pytest.raises(ConfigError) as exc:
        check_region(cfg, session)
    assert exc.value.field == "cloud.region" and "eu-west-1" in exc.value.message
