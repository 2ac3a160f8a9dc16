"""A Python worker function, run as its own process the way a scheduler invokes one: the event
comes in SMLT_FUNCTION_EVENT and the time limit in SMLT_FUNCTION_TIMEOUT_MS; it exits 0, 75 or 65.
It trains the built-in softmax workload on its staged data partition. With SLOW_STEP_S set it
sleeps that long in every step (to run into its time limit)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from smlt import FunctionEvent, Job  # noqa: E402
from smlt.blob import decode  # noqa: E402
from smlt.worker import main  # noqa: E402

import softmax  # noqa: E402

event = FunctionEvent.from_env()
with Job.open(list(event.redis), event.job) as job:
    n = job.config.workers
    px = decode(job.get_object(f"data-{n}-{event.worker}-x")).values.reshape(-1, softmax.INPUTS)
    py = decode(job.get_object(f"data-{n}-{event.worker}-y")).values
slow = float(os.environ.get("SLOW_STEP_S", "0"))


def compute(step, params):
    time.sleep(slow)
    return softmax.gradient(params, px, py, step)


main(compute)
