"""Training checkpoints: one ``.npz`` (loaded with ``allow_pickle=False``) holding everything a
run needs to continue exactly where it stopped.

=========================== =====================================================================
key                         value
=========================== =====================================================================
``format``                  ``"refquant.checkpoint"`` (0-d unicode array)
``format_version``          1
``config``                  the :class:`~refquant.train.trainer.TrainConfig` as JSON text
``epoch``                   epochs completed (int64)
``history``                 per-epoch progress records as JSON text
``rng:state``               the PCG64 state as uint64 ``[state_hi, state_lo, inc_hi, inc_lo]``
``rng:has_uint32``          PCG64's buffered-uint32 flag (int64)
``rng:uinteger``            the buffered uint32 (uint64)
``param:<name>``            every initializer (weights, biases, BN scale/bias and running statistics)
``optim:<key>``             optimizer state: ``t``, and ``velocity:<name>`` (SGD) or
                            ``m:<name>``, ``v:<name>`` (Adam)
``qat:<kind>:<point>:<k>``  each fake-quantizer's state (see :class:`~refquant.train.fakequant.FakeQuant`)
=========================== =====================================================================

The file is written to ``<path>.tmp`` and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "save_checkpoint", "load_checkpoint",
           "rng_state_arrays", "rng_from_arrays"]

CHECKPOINT_FORMAT = "refquant.checkpoint"
CHECKPOINT_VERSION = 1
_MASK64 = (1 << 64) - 1


@dataclass
class Checkpoint:
    config: dict
    epoch: int
    history: list
    rng: np.random.Generator
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    qat: dict[str, np.ndarray]


def rng_state_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A PCG64 generator's complete state as fixed-size integer arrays."""
    st = rng.bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise ValueError(f"checkpoints store PCG64 generators, got {st.get('bit_generator')!r}")
    s, inc = int(st["state"]["state"]), int(st["state"]["inc"])
    return {
        "rng:state": np.array([s >> 64, s & _MASK64, inc >> 64, inc & _MASK64], dtype=np.uint64),
        "rng:has_uint32": np.int64(st["has_uint32"]),
        "rng:uinteger": np.uint64(st["uinteger"]),
    }


def rng_from_arrays(arrays: dict) -> np.random.Generator:
    """The generator :func:`rng_state_arrays` described, in exactly that state."""
    hi_s, lo_s, hi_i, lo_i = (int(v) for v in arrays["rng:state"])
    bg = np.random.PCG64()
    bg.state = {"bit_generator": "PCG64", "state": {"state": (hi_s << 64) | lo_s, "inc": (hi_i << 64) | lo_i},
                "has_uint32": int(arrays["rng:has_uint32"]), "uinteger": int(arrays["rng:uinteger"])}
    return np.random.Generator(bg)


def save_checkpoint(path, *, config: dict, epoch: int, history: list, rng: np.random.Generator,
                    params: dict, optimizer: dict, qat: dict) -> Path:
    path = Path(path)
    arrays = {
        "format": np.array(CHECKPOINT_FORMAT),
        "format_version": np.int64(CHECKPOINT_VERSION),
        "config": np.array(json.dumps(config, sort_keys=True)),
        "epoch": np.int64(epoch),
        "history": np.array(json.dumps(history)),
        **rng_state_arrays(rng),
        **{f"param:{k}": np.asarray(v) for k, v in params.items()},
        **{f"optim:{k}": np.asarray(v) for k, v in optimizer.items()},
        **{f"qat:{k}": np.asarray(v) for k, v in qat.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint; ValueError naming the file if it is not one (or a newer version)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npz checkpoint ({exc})") from None
    if arrays.get("format") is None or str(arrays["format"]) != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a refquant checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if int(arrays["format_version"]) != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {int(arrays['format_version'])}, "
                         f"this refquant reads version {CHECKPOINT_VERSION}")
    for key in ("config", "epoch", "history", "rng:state", "rng:has_uint32", "rng:uinteger"):
        if key not in arrays:
            raise ValueError(f"{path}: checkpoint lacks the entry {key!r}")

    def prefixed(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    return Checkpoint(
        config=json.loads(str(arrays["config"])),
        epoch=int(arrays["epoch"]),
        history=json.loads(str(arrays["history"])),
        rng=rng_from_arrays(arrays),
        params=prefixed("param:"),
        optimizer=prefixed("optim:"),
        qat=prefixed("qat:"),
    )
