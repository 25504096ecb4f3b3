"""Checkpoints shipped inside the package (``python/xrdflow/pretrained/NAME.pt``).

::

    from xrdflow import pretrained
    pretrained.available()            # {"contrastive": PosixPath(".../pretrained/contrastive.pt")} when shipped
    path = pretrained.path("contrastive")   # FileNotFoundError saying how to make it when it is not shipped
    pretrained.provenance("contrastive")    # contents of NAME.json (config, command, data, metrics) or None

A shipped model is a checkpoint written by ``xrdflow train`` (``contrastive``, read
with ``torch.load(weights_only=True)`` through :func:`xrdflow.train.load_model`) or
by ``xrdflow classifier train`` (``classifier``, read through
:func:`xrdflow.classify.load_classifier`), with a ``NAME.json`` beside it saying how
it was made.  scikit-build-core puts
every file under ``python/xrdflow`` into the wheel (``wheel.packages`` in
pyproject.toml), so a ``.pt`` dropped here ships with the next build.

On the command line, ``--checkpoint pretrained:NAME`` stands for
``path(NAME)`` (``xrdflow evaluate``, ``xrdflow search``, ``xrdflow demo``;
``xrdflow classify`` and ``xrdflow classifier evaluate`` with ``pretrained:classifier``).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

__all__ = ["DIRECTORY", "PREFIX", "available", "path", "provenance", "resolve"]

#: Folder of the shipped checkpoints.
DIRECTORY = Path(__file__).resolve().parent
#: Prefix of a shipped checkpoint on the command line: ``pretrained:contrastive``.
PREFIX = "pretrained:"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

#: How each known model is produced (what the error message tells the user).
_HOW_TO_MAKE = {
    "contrastive": ("train it with `xrdflow train --config configs/contrastive_cpu.yaml` (from the repository "
                    "root, with ../shared/data beside it; about 45 minutes on 2 CPU cores) and ship it with "
                    "`python scripts/export_pretrained.py runs/contrastive_cpu/best.pt --name contrastive --command "
                    "...`, which writes {target} and contrastive.json. Without it, `xrdflow demo --from-scratch` "
                    "trains a small model on the bundled data"),
    "classifier": ("train it with `xrdflow classifier train --config configs/classifier_full.yaml` (from the "
                   "repository root, with ../shared/data beside it and the shipped contrastive model in place; "
                   "about 11 minutes on 2 CPU cores) and ship it with `python scripts/export_pretrained.py "
                   "runs/classifier_full/last.pt --name classifier --command ...`, which writes {target} and "
                   "classifier.json"),
}


def _check_name(name) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".pt"):
        raise ValueError(f"a shipped model name is a plain name such as 'contrastive' (no folder, no .pt), "
                         f"got {name!r}")
    return name


def available() -> dict[str, Path]:
    """``{name: path}`` of every checkpoint shipped in this installation (empty when none is)."""
    return {p.stem: p for p in sorted(DIRECTORY.glob("*.pt")) if p.is_file() and _NAME_RE.match(p.stem)}


def path(name: str = "contrastive") -> Path:
    """Path of the shipped checkpoint ``name``; FileNotFoundError (saying how to produce it) when absent."""
    name = _check_name(name)
    target = DIRECTORY / f"{name}.pt"
    if target.is_file():
        return target
    have = ", ".join(available()) or "none"
    how = _HOW_TO_MAKE.get(name, "put a checkpoint written by `xrdflow train` there as {target}")
    raise FileNotFoundError(f"no shipped model {name!r} in this installation ({os.fspath(target)} does not exist; "
                            f"shipped models: {have}). To produce it, {how.format(target=os.fspath(target))}.")


def provenance(name: str = "contrastive") -> dict | None:
    """The shipped ``NAME.json`` (how the checkpoint was made), or None when there is none."""
    name = _check_name(name)
    meta = DIRECTORY / f"{name}.json"
    if not meta.is_file():
        return None
    with open(meta, encoding="utf-8") as fh:
        return json.load(fh)


def resolve(checkpoint) -> str:
    """A ``--checkpoint`` argument as a file path: ``pretrained:NAME`` -> :func:`path` (NAME), anything else
    unchanged."""
    text = os.fspath(checkpoint)
    if isinstance(text, str) and text.startswith(PREFIX):
        return os.fspath(path(text[len(PREFIX):] or "contrastive"))
    return text
