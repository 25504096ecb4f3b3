"""Checkpoints: one ``torch.save`` of plain values, written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only (no pickled
objects), so :func:`torch.load` reads it with ``weights_only=True``:

=================  ==========================================================
``format``         ``"xrdflow-contrastive"``; ``version``: :data:`VERSION`
                   (the classifier's checkpoints use the same functions with
                   ``format="xrdflow-classifier"``)
``config``         the :class:`~xrdflow.train.TrainConfig` as plain dicts
``model``          ``DualTower.state_dict()``
``optimizer``      ``AdamW.state_dict()``; ``scheduler``: ``LambdaLR.state_dict()``
``scaler``         ``GradScaler.state_dict()`` (fp16 runs) or None
``step``           optimizer steps taken; ``epoch``, ``batch_in_epoch``: where
                   the stream stands (batches of ``epoch`` already used)
``rng``            torch (CPU, CUDA), NumPy and ``random`` generator states
``best``           best validation top-1 so far and its step
=================  ==========================================================

:func:`save_checkpoint` writes to a temporary file in the same folder,
flushes and fsyncs it, then ``os.replace``-s it over the target and fsyncs
the folder: a crash at any point leaves either the old or the new file,
never a partial one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .._fileio import atomic_output
from .config import TrainConfig, config_from_dict

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "read_checkpoint", "load_model", "rng_state", "set_rng_state"]

FORMAT = "xrdflow-contrastive"
VERSION = 1


def rng_state() -> dict:
    """Every random generator a training step may use, as tensors and numbers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(gauss),
        "python_version": int(py_version),
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": None if py_gauss is None else float(py_gauss),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    if kind != "MT19937":  # pragma: no cover - numpy's legacy global generator is always MT19937
        raise RuntimeError(f"unexpected numpy global generator {kind}")
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]),
                         int(state["numpy_has_gauss"]), float(state["numpy_gauss"])))
    random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python_state"].tolist()),
                     state["python_gauss"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path, payload: dict, *, format: str = FORMAT, version: int = VERSION) -> None:
    """``torch.save(payload)`` to ``path`` atomically (temp file in the same folder, fsync, os.replace),
    with ``format`` and ``version`` entries first (those of ``payload`` win when it has them)."""
    payload = {"format": format, "version": version, **payload}
    with atomic_output(path, make_parents=True) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)


def read_checkpoint(path, map_location="cpu", *, format: str = FORMAT, version: int = VERSION,
                    kind: str = "contrastive", hint: str = "") -> dict:
    """The checkpoint dict, loaded with ``weights_only=True`` and checked for ``format`` and ``version``
    (``kind`` and ``hint`` only word the error: "not an xrdflow KIND checkpoint ...; HINT")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {os.fspath(path)!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors, truncated zip, ...
        raise ValueError(f"{os.fspath(path)} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != format:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{os.fspath(path)} is not an xrdflow {kind} checkpoint (format {got!r}, expected "
                         f"{format!r}){'; ' + hint if hint else ''}")
    if ckpt.get("version") != version:
        raise ValueError(f"{os.fspath(path)} has {kind} checkpoint version {ckpt.get('version')!r}; this xrdflow "
                         f"reads version {version}")
    for key in ("config", "model", "step"):
        if key not in ckpt:
            raise ValueError(f"{os.fspath(path)} lacks the {key!r} entry")
    return ckpt


def load_model(path, map_location="cpu"):
    """``(model, cfg)``: the :class:`~xrdflow.models.DualTower` of a checkpoint in eval mode, and its
    :class:`~xrdflow.train.TrainConfig` (``cfg.make_simulator()`` gives the pattern grid it expects)."""
    from ..models import DualTower

    ckpt = read_checkpoint(path, map_location=map_location)
    cfg: TrainConfig = config_from_dict(ckpt["config"])
    model = DualTower(cfg.model)
    model.load_state_dict(ckpt["model"])
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    model.eval()
    return model, cfg
