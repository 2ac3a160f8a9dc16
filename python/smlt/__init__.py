"""SMLT's Redis wire format in Python (docs/wire-format.md): tensor blobs, keys, shard maps and
training configs, named tensors, job registration, the BSP worker protocol and the describe and
evaluate phases of function-defined models. ``smlt.torch`` (imported on its own; it needs
PyTorch) trains a ``torch.nn.Module`` through SMLT."""

from .blob import (Blob, BlobError, BlobHeader, BlobTooLarge, BadHeader, BadLength, ChecksumMismatch, Codec,
                   CorruptPayload, CountMismatch, InvalidFraction, InvalidIndex, TruncatedBlob, UnsupportedDtype,
                   decode, decode_sparse, encode, encode_sparse, encode_topk, topk_indices)
from .client import Job, JobExists, JobNotFound, SMLTError, UntrustedEndpoint, register_job
from .layout import Layout, ShardMap, SpecError, TensorSpec, TrainingConfig
from .tensors import flatten, join_chunks, split_chunks, unflatten
from .phases import DescribeError, EvaluationError, PhaseError
from .worker import DatasetInfo, FunctionEvent, PushLost, StepResult, Worker

__version__ = "0.1.0"
