"""Is there an AWS account to talk to: credentials (never logged: only the caller's account
and ARN from ``sts:GetCallerIdentity``) and a region with SageMaker."""
from __future__ import annotations

from cloud_runners import aws
from harness.config import PipelineConfig
from harness.errors import ConfigError, HarnessError

NO_CREDENTIALS_MESSAGE = ("no AWS credentials found: set AWS_PROFILE or "
                          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run `aws configure`); "
                          "nothing was created")


class NoCredentials(HarnessError):
    """No AWS credentials in the environment: nothing can be (or was) created."""

    exit_code = 2

    def __init__(self, problem: str = NO_CREDENTIALS_MESSAGE, **kw):
        super().__init__(problem, **kw)


def require_credentials(cfg: PipelineConfig, session) -> dict[str, str]:
    """The caller's identity (Account, Arn); NoCredentials when there are none."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        creds = session.get_credentials()
    except PartialCredentialsError:
        creds = None
    if creds is None:
        raise NoCredentials()
    try:
        ident = aws.client(session, "sts", cfg).get_caller_identity()
    except (NoCredentialsError, PartialCredentialsError):
        raise NoCredentials() from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        raise HarnessError(f"AWS rejected the credentials ({code})",
                           expected="valid, unexpired credentials for the account",
                           hint="refresh them (e.g. `aws sso login`) and try again; "
                                "nothing was created") from None
    except EndpointConnectionError as e:
        raise HarnessError(f"cannot reach AWS STS ({e})", field="cloud.endpoint_url"
                           if cfg.cloud.endpoint_url else "cloud.region",
                           hint="check the network; nothing was created") from None
    except BotoCoreError as e:  # e.g. an expired SSO token
        raise NoCredentials(f"AWS credentials could not be loaded ({type(e).__name__}: {e})",
                            hint="refresh them (e.g. `aws sso login`) and try again; nothing "
                                 "was created") from None
    return {"Account": ident["Account"], "Arn": ident["Arn"]}


def check_region(cfg: PipelineConfig, session) -> str:
    region = aws.region(cfg, session)
    known = session.get_available_regions("sagemaker")
    if region not in known:
        raise ConfigError(f"'{region}' is not a region with SageMaker", field="cloud.region",
                          expected="one of " + ", ".join(sorted(known)))
    return region
