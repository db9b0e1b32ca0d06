"""``awsglue.job``: Job.init / commit without bookmarks.

Locally there is no bookmark service: every run reads all its input, as a Glue job with
``--job-bookmark-option job-bookmark-disable`` (Glue's default) does. ``init`` and
``commit`` are recorded so the runner can tell a script that never committed (Glue does
not fail such a run; the runner logs a warning).
"""
from __future__ import annotations

from typing import Any

from local_runners.glue_compat import runtime
from local_runners.glue_compat.unsupported import GlueCompatError, Unsupported, module_getattr

GLUE_NAME = "awsglue.job"
__all__ = ["Job"]
__getattr__ = module_getattr(GLUE_NAME)


class Job(Unsupported):
    _glue_name = "Job"

    @classmethod
    def continuation_options(cls) -> list[str]:
        return ["--continuation-option", "continuation-enabled", "continuation-readonly",
                "continuation-ignore"]

    @classmethod
    def job_bookmark_options(cls) -> list[str]:
        return ["--job-bookmark-option", "job-bookmark-enable", "job-bookmark-pause",
                "job-bookmark-disable"]

    @classmethod
    def job_bookmark_range_options(cls) -> list[str]:
        return ["--job-bookmark-from", "--job-bookmark-to"]

    @classmethod
    def id_params(cls) -> list[str]:
        return ["--JOB_NAME", "--JOB_ID", "--JOB_RUN_ID", "--SECURITY_CONFIGURATION"]

    @classmethod
    def encryption_type_options(cls) -> list[str]:
        return ["--encryption-type", "sse-s3"]

    def __init__(self, glue_context_or_spark_session: Any):
        from pyspark.sql import SparkSession

        from local_runners.glue_compat.context import GlueContext
        if not isinstance(glue_context_or_spark_session, (GlueContext, SparkSession)):
            raise GlueCompatError("cannot init Job instance given input parameter type: "
                                  f"{type(glue_context_or_spark_session)}")
        self._rt = runtime.current()
        self._name: str | None = None
        self._committed = False

    def init(self, job_name: str, args: dict | None = None) -> None:
        self._name = job_name
        self._rt.jobs_initialised.append(str(job_name))
        self._rt.log.info("awsglue compat: Job.init(%s): job bookmarks are off locally",
                          job_name)

    def isInitialized(self) -> bool:
        return self._name is not None

    def commit(self) -> None:
        if self._name is None:
            self._rt.log.warning("awsglue compat: Job.commit() called before Job.init()")
        self._committed = True
        self._rt.commits += 1
        self._rt.log.info("awsglue compat: Job.commit(%s)", self._name)
