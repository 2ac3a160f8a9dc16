"""Every Redis key of a job (see "Keys" in docs/wire-format.md)."""

from __future__ import annotations

import re

__all__ = [
    "JOBS", "SERVE_WAKEUP", "check_job_id", "map_key", "epoch_key", "train_key", "params", "pull_copy",
    "opt", "grad", "ckpt_params", "ckpt_opt", "pushed", "inbox", "rejected", "versions",
    "hold", "metrics", "lease", "starts", "failure", "run", "moving", "obj", "describe", "describe_tensor",
    "evaluation",
]

#: Set of the job ids registered on a shard.
JOBS = "smlt:jobs"
#: List whose pushes wake a shard's parameter servers.
SERVE_WAKEUP = "smlt:serve:wakeup"

_JOB_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_job_id(job: str) -> str:
    """Return ``job`` if it is a valid job id (1-64 of ``A-Z a-z 0-9 _ - .``), else raise ValueError."""
    if not isinstance(job, str) or not _JOB_ID.fullmatch(job):
        raise ValueError(f"invalid job id {job!r}: 1-64 characters of A-Z a-z 0-9 _ - .")
    return job


def map_key(job: str) -> str:
    return f"smlt:{{{job}}}:map"


def epoch_key(job: str) -> str:
    return f"smlt:{{{job}}}:epoch"


def train_key(job: str) -> str:
    return f"smlt:{{{job}}}:train"


def params(job: str, chunk: int) -> str:
    return f"smlt:{{{job}/{chunk}}}:params"


def pull_copy(job: str, chunk: int) -> str:
    """The low-precision copy of ``params`` that workers pull when the map names a pull encoding."""
    return f"smlt:{{{job}/{chunk}}}:pull"


def opt(job: str, chunk: int) -> str:
    return f"smlt:{{{job}/{chunk}}}:opt"


def grad(job: str, chunk: int, step: int, worker: int) -> str:
    return f"smlt:{{{job}/{chunk}}}:grad:{step}:{worker}"


def ckpt_params(job: str, chunk: int) -> str:
    return f"smlt:{{{job}/{chunk}}}:ckpt:params"


def ckpt_opt(job: str, chunk: int) -> str:
    return f"smlt:{{{job}/{chunk}}}:ckpt:opt"


def pushed(job: str, shard: int, step: int) -> str:
    return f"smlt:{{{job}}}:pushed:{shard}:{step}"


def inbox(job: str, shard: int) -> str:
    return f"smlt:{{{job}}}:inbox:{shard}"


def rejected(job: str) -> str:
    return f"smlt:{{{job}}}:rejected"


def versions(job: str, shard: int) -> str:
    return f"smlt:{{{job}}}:versions:{shard}"


def hold(job: str) -> str:
    return f"smlt:{{{job}}}:hold"


def metrics(job: str) -> str:
    return f"smlt:{{{job}}}:metrics"


def lease(job: str, worker: int) -> str:
    return f"smlt:{{{job}}}:lease:{worker}"


def starts(job: str) -> str:
    return f"smlt:{{{job}}}:starts"


def failure(job: str) -> str:
    return f"smlt:{{{job}}}:failure"


def run(job: str) -> str:
    return f"smlt:{{{job}}}:run"


def moving(job: str) -> str:
    """The journal of a re-shard in progress (written and removed by the driver)."""
    return f"smlt:{{{job}}}:moving"


def obj(job: str, name: str) -> str:
    return f"smlt:{{{job}}}:obj:{name}"


# Function-defined models (the describe and evaluate phases), on the home shard.

def describe(job: str) -> str:
    """The manifest a describe invocation writes last: ``{"tensors": [{"name", "shape"}, ...]}``."""
    return f"smlt:{{{job}}}:describe"


def describe_tensor(job: str, index: int) -> str:
    """The initial value (a tensor blob) of the described model's tensor ``index``."""
    return f"smlt:{{{job}}}:describe:{index}"


def evaluation(job: str) -> str:
    """The final model's metrics (JSON) an evaluate invocation writes."""
    return f"smlt:{{{job}}}:evaluation"
