"""On-disk cache of reference trajectories, one file per case, keyed by every parameter that
shapes it. A file that is partial, corrupt or made for other parameters is detected, reported
and regenerated, never used."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .atomic import WriteError, save_torch

CACHE_ENV = "ZOOFRAME_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "zooframe")


def _digest(frames: torch.Tensor) -> str:
    return hashlib.sha256(frames.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class TrajectoryCache:
    def __init__(self, directory: str | Path | None = None, prefix: str = "ref"):
        self.directory = Path(directory) if directory else default_cache_dir()
        self.prefix = prefix

    def path(self, params: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:24]
        return self.directory / f"{self.prefix}-{key}.pt"

    def load(self, params: dict[str, Any], steps: int) -> torch.Tensor | None:
        """Frames ``[steps + 1, ...]`` if a valid file with at least that many exists."""
        path = self.path(params)
        try:
            seen = path.stat()
        except FileNotFoundError:
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            frames = data["frames"]
            if data["params"] != json.loads(json.dumps(params)):
                raise ValueError("made for other parameters")
            if data["sha256"] != _digest(frames):
                raise ValueError("checksum mismatch")
        except Exception as exc:  # unreadable, truncated, tampered: all regenerate
            warnings.warn(f"ignoring corrupt reference cache file {path} ({exc}); regenerating", stacklevel=2)
            try:
                now = path.stat()
                if (now.st_ino, now.st_mtime_ns) == (seen.st_ino, seen.st_mtime_ns):  # not another run's new file
                    path.unlink()
            except FileNotFoundError:
                pass
            return None
        return frames[: steps + 1] if frames.shape[0] >= steps + 1 else None

    def save(self, params: dict[str, Any], frames: torch.Tensor) -> Path:
        path = self.path(params)
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = frames.detach().cpu().contiguous()
        try:  # atomic, each writer with its own temporary file: a killed run never leaves a partial entry
            save_torch(path, {"params": params, "frames": frames, "sha256": _digest(frames)})
        except WriteError as exc:  # the frames are computed: the run goes on without caching them
            warnings.warn(f"the reference cache could not keep a trajectory ({exc}); it is used all the same", stacklevel=2)
        return path

    def fetch(self, params: Sequence[dict[str, Any]], steps: int,
              generate: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """Trajectories ``[len(params), steps + 1, ...]``: each from its file when a valid one holds
        enough steps, the others from one call ``generate(indices)`` (their frames ``[k, steps + 1,
        ...]``), which are then saved."""
        found = {i: self.load(p, steps) for i, p in enumerate(params)}
        missing = [i for i, frames in found.items() if frames is None]
        if missing:
            for i, frames in zip(missing, generate(missing)):
                self.save(params[i], frames)
                found[i] = frames
        return torch.stack([found[i] for i in range(len(params))])
