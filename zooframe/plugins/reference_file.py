"""Reference trajectories in a file: the ``file`` reference source and its layout.

One file, ``.npz`` (NumPy) or ``.h5``/``.hdf5`` (HDF5, needs ``h5py``), holds N cases:

=================== ================== =====================================================
field               shape, dtype       meaning
=================== ================== =====================================================
``trajectories``    [N, T + 1, C, *S]  each case's states on the simulator's grid, frame 0
                    float              being the initial state
``case_names``      [N] str            unique names
``splits``          [N] str            each case's set: ``train``, ``test`` or any other name
``parameter_names`` [P] str            the case parameters the simulator's step reads
``parameters``      [N, P] float       their values (P may be 0)
``features``        [N, F] float       optional: constant per-case inputs of the model
``channels``        [C] str            optional: checked against the simulator's channels
``format_version``  scalar int         1
=================== ================== =====================================================

Strings are stored as unicode arrays (``.npz``, so no pickle is ever loaded) or as UTF-8
strings (HDF5). A file is checked against the simulator's state spec before any training, its
trajectories read only after the other fields and the shape the file declares for them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from .atomic import atomic_write, probe
from .base import PluginConfig
from .errors import ZooframeError
from .reference import ReferenceSource
from .simulator import Case, StateSpec

FORMAT_VERSION = 1
REQUIRED = ("trajectories", "case_names", "splits", "parameter_names", "parameters")
OPTIONAL = ("features", "channels", "format_version")
HDF5_SUFFIXES = (".h5", ".hdf5")


class ReferenceFileError(ZooframeError):
    """A reference file that does not fit the layout or the simulator; one line per problem."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"reference file {path}:\n" + "\n".join(f"  {p}" for p in problems))


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ZooframeError("HDF5 reference files need h5py: pip install 'zooframe[hdf5]' (or use .npz)") from None
    return h5py


@dataclass(frozen=True)
class Declared:
    """A field as the file declares it, before its data is read."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


def read_arrays(path: str | Path, declared_only: Collection[str] = ()) -> dict[str, np.ndarray | Declared]:
    """The file's fields as NumPy arrays (strings as ``str`` arrays); those in ``declared_only``
    as their :class:`Declared` shape and dtype, without reading (or decompressing) their data."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceFileError(path, ["no such file"])
    try:
        if path.suffix in HDF5_SUFFIXES:
            h5py = _h5py()
            with h5py.File(path, "r") as f:
                sets = {k: f[k] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
                return {k: Declared(d.shape, d.dtype) if k in declared_only
                        else np.asarray(d.asstr()[()], dtype=str) if d.dtype.kind in "OS" else d[()]
                        for k, d in sets.items()}
        with np.load(path, allow_pickle=False) as f:
            return {k: _npz_declared(f, k) if k in declared_only else np.asarray(f[k]) for k in f.files}
    except ZooframeError:
        raise
    except Exception as exc:  # not an archive, truncated, an object array: all the same to the user
        raise ReferenceFileError(path, [f"cannot be read as {'HDF5' if path.suffix in HDF5_SUFFIXES else '.npz'} "
                                        f"({type(exc).__name__}: {exc})"]) from None


def _npz_declared(archive, key: str) -> Declared:
    """The shape and dtype in the header of an ``.npz`` member."""
    with archive.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, _, dtype = read_header[version](member)
    return Declared(shape, dtype)


def write_reference_file(path: str | Path, trajectories, case_names: Sequence[str], splits: Sequence[str],
                         parameters: dict[str, Sequence[float]], features=None,
                         channels: Sequence[str] | None = None) -> Path:
    """Write the layout above; ``parameters`` maps each parameter name to one value per case."""
    path = Path(path)
    names = sorted(parameters)
    fields = {
        "trajectories": np.asarray(trajectories),
        "case_names": np.asarray(list(case_names), dtype=str),
        "splits": np.asarray(list(splits), dtype=str),
        "parameter_names": np.asarray(names, dtype=str).reshape(len(names)),
        "parameters": np.asarray([parameters[n] for n in names], dtype=np.float64).reshape(len(names), -1).T
        if names else np.zeros((len(case_names), 0)),
        "format_version": np.asarray(FORMAT_VERSION),
    }
    if features is not None:
        fields["features"] = np.asarray(features)
    if channels is not None:
        fields["channels"] = np.asarray(list(channels), dtype=str)
    hdf5 = path.suffix in HDF5_SUFFIXES
    h5py = _h5py() if hdf5 else None
    probe(path, follow_symlink=True)  # a path the user named
    with atomic_write(path, "w+b" if hdf5 else "wb", follow_symlink=True) as f:  # a path the user named
        if hdf5:
            with h5py.File(f, "w") as h5:
                for key, value in fields.items():
                    h5.create_dataset(key, data=value.astype(h5py.string_dtype()) if value.dtype.kind == "U" else value)
        else:
            np.savez_compressed(f, **fields)
    return path


@dataclass
class ReferenceData:
    trajectories: np.ndarray  # [N, T + 1, C, *S]
    cases: dict[str, list[Case]]
    features: np.ndarray  # [N, F]
    row: dict[str, int]  # case name -> index

    @property
    def steps(self) -> int:
        return self.trajectories.shape[1] - 1


def check_arrays(arrays: dict[str, np.ndarray | Declared], spec: StateSpec) -> list[str]:
    """Every way the fields miss the layout or the state spec, as ``field: problem`` lines (a
    :class:`Declared` field: its shape and dtype only)."""
    problems = [f"{k}: missing (required fields: {', '.join(REQUIRED)})" for k in REQUIRED if k not in arrays]
    problems += [f"{k}: unknown field (allowed: {', '.join(REQUIRED + OPTIONAL)})" for k in arrays
                 if k not in REQUIRED + OPTIONAL]
    if problems:
        return problems
    traj, names = arrays["trajectories"], arrays["case_names"]
    n = traj.shape[0] if traj.ndim else 0
    names_fit = names.dtype.kind == "U" and names.shape == (n,)
    labels = names if names_fit else None  # of the cases that a problem names
    version = arrays.get("format_version")
    if version is not None and (version.shape != () or version.dtype.kind not in "iu"):
        problems.append(f"format_version: expected the integer {FORMAT_VERSION}, got {version.dtype} of shape "
                        f"{list(version.shape)}")
    elif version is not None and int(version) != FORMAT_VERSION:
        problems.append(f"format_version: {int(version)}, this zooframe reads version {FORMAT_VERSION}")
    if traj.dtype.kind != "f":
        problems.append(f"trajectories: dtype {traj.dtype}, expected a float type")
    expected = f"[cases, steps + 1, {', '.join(map(str, spec.shape))}]"
    if traj.ndim != 2 + len(spec.shape) or tuple(traj.shape[2:]) != spec.shape:
        problems.append(f"trajectories: shape {list(traj.shape)}, expected {expected} (channels "
                        f"{', '.join(spec.channels)} over the grid {list(spec.spatial_shape)})")
    elif traj.shape[1] < 2:
        problems.append(f"trajectories: {traj.shape[1]} frame(s) per case; at least 2 (an initial state and a step)")
    elif traj.dtype.kind == "f" and isinstance(traj, np.ndarray):
        problems += _nonfinite("trajectories", traj, labels)
    for key in ("case_names", "splits"):
        if arrays[key].dtype.kind != "U" or arrays[key].shape != (n,):
            problems.append(f"{key}: expected {n} strings (one per case), got {arrays[key].dtype} "
                            f"of shape {list(arrays[key].shape)}")
    if names_fit and len(set(names.tolist())) != n:
        problems.append("case_names: names repeat; each case needs its own")
    p_names, params = arrays["parameter_names"], arrays["parameters"]
    if p_names.dtype.kind != "U" or p_names.ndim != 1:
        problems.append(f"parameter_names: expected a list of strings, got {p_names.dtype} of shape {list(p_names.shape)}")
    elif params.shape != (n, len(p_names)) or params.dtype.kind not in "fiu":
        problems.append(f"parameters: expected numbers of shape [{n}, {len(p_names)}] (cases x parameter_names), "
                        f"got {params.dtype} of shape {list(params.shape)}")
    else:
        problems += _nonfinite("parameters", params, labels)
    features = arrays.get("features")
    if features is not None and (features.ndim != 2 or features.shape[0] != n or features.dtype.kind not in "fiu"):
        problems.append(f"features: expected numbers of shape [{n}, F], got {features.dtype} of shape "
                        f"{list(features.shape)}")
    elif features is not None:
        problems += _nonfinite("features", features, labels)
    channels = arrays.get("channels")
    if channels is not None and (channels.dtype.kind != "U" or channels.ndim != 1):
        problems.append(f"channels: expected a list of strings, got {channels.dtype} of shape {list(channels.shape)}")
    elif channels is not None and tuple(channels.tolist()) != spec.channels:
        problems.append(f"channels: {', '.join(channels.tolist())}; the simulator's are {', '.join(spec.channels)}")
    return problems


def _nonfinite(key: str, values: np.ndarray, names: np.ndarray | None) -> list[str]:
    """A problem naming the cases (rows) of ``values`` that hold NaN or Inf, if any."""
    bad = np.flatnonzero(~np.isfinite(values).all(axis=tuple(range(1, values.ndim))))
    if not len(bad):
        return []
    shown = ", ".join(str(names[i]) if names is not None else f"#{i}" for i in bad[:5])
    return [f"{key}: NaN or Inf in case(s) {shown}{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}"]


def load_reference_file(path: str | Path, spec: StateSpec) -> ReferenceData:
    # the small fields and the trajectories' declared shape first: a file of the wrong shape is
    # refused before its largest field is read and decompressed
    problems = check_arrays(read_arrays(path, declared_only=("trajectories",)), spec)
    if not problems:
        arrays = read_arrays(path)
        problems = check_arrays(arrays, spec)  # now with the values: NaN, Inf
    if problems:
        raise ReferenceFileError(path, problems)
    names = arrays["case_names"].tolist()
    p_names = arrays["parameter_names"].tolist()
    cases: dict[str, list[Case]] = {}
    for name, split, values in zip(names, arrays["splits"].tolist(), arrays["parameters"].tolist()):
        cases.setdefault(split, []).append(Case(name, dict(zip(p_names, map(float, values)))))
    features = arrays.get("features", np.zeros((len(names), 0)))
    return ReferenceData(arrays["trajectories"], cases, features, {n: i for i, n in enumerate(names)})


class FileReferenceConfig(PluginConfig):
    kind: Literal["file"]
    path: str = Field(..., description=".npz or .h5/.hdf5 file in zooframe's reference layout (docs/"
                      "writing-a-plugin.md); relative paths are taken from the working directory")


class FileReference(ReferenceSource):
    """Cases and trajectories read from a file in the layout above, checked on loading."""

    Config = FileReferenceConfig

    def __init__(self, config: FileReferenceConfig, simulator, device="cpu"):
        super().__init__(config, simulator, device)
        self.data = load_reference_file(config.path, simulator.state_spec)
        self.max_steps = self.data.steps

    def cases(self):
        return self.data.cases

    def _rows(self, cases: Sequence[Case]) -> list[int]:
        return [self.data.row[c.name] for c in cases]

    def features(self, cases):
        return torch.as_tensor(self.data.features[self._rows(cases)], device=self.device)

    def trajectories(self, cases, steps):
        if steps > self.data.steps:
            raise ZooframeError(f"{self.describe()} holds {self.data.steps} steps per case; the run asks for "
                                f"{steps}")
        return torch.as_tensor(self.data.trajectories[self._rows(cases), : steps + 1], device=self.device)

    def describe(self) -> str:
        return f"reference file {self.config.path}"
