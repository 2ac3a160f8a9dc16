"""A function-defined model in numpy alone, for `smlt train --model function`: softmax regression
that this function describes (tensors "weight" [features, classes] and "bias" [classes], all zeros
at version 0), trains (smlt.builtin's softmax gradient on the worker's staged batches, with the
job's workload batch_size) and evaluates (mean cross-entropy and accuracy on test-x/test-y).

Its describe, steps and evaluation are those of the built-in softmax model, so a run of
`--model function --function "python3 python/tests/np_function.py"` has the same param_digest as
`--model softmax --function "python3 -m smlt.builtin"` with the same flags (and the same --lr).
"""

import os

import numpy as np

from smlt.builtin import Settings, batch, gradient, partition_source
from smlt.worker import main


def settings(features, classes, batch_size=1):
    return Settings("softmax", features, classes, batch_size, 0)


def dataset(event):
    if event.dataset is None:
        raise ValueError("np_function.py needs the event's 'dataset' (smlt train --model function)")
    return event.dataset


def describe(event):
    d = dataset(event)
    return {"weight": np.zeros((d.features, d.classes), np.float32), "bias": np.zeros(d.classes, np.float32)}


def prepare(worker):
    d = dataset(worker.event)
    s = settings(d.features, d.classes, int(worker.job.config.workload["batch_size"]))
    partition, warm = partition_source(worker, d.features, d.classes, os.environ.get("SMLT_FUNCTION_CACHE"))
    return (lambda step, params: gradient(s, params, *batch(partition(), step, s.batch_size))), warm


def evaluate(params, x, y):
    r = gradient(settings(x.shape[1], params["bias"].size), params, x, y)
    return {"test_loss": r.loss, "test_accuracy": r.accuracy}


if __name__ == "__main__":
    main(prepare=prepare, describe=describe, evaluate=evaluate)
