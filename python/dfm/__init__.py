"""dfm from Python: load an exported delivery model, predict, compute its inputs, read datasets.

The work is done by the dfm crate itself (compiled into ``dfm._dfm``): the same request
validation, feature code and model as ``dfm predict`` and ``dfm serve``, so a prediction made
here equals theirs. Samples are the JSON objects of a ``/v1/predict`` request (dicts here).

    import dfm
    model = dfm.load("bundle")                    # an export bundle (or a run folder)
    preds = model.predict(samples)                # dicts, a JSON-lines path, or a DataFrame
    arrays = dfm.features(samples, model)         # the model's inputs: name -> numpy array
    for s in dfm.read_dataset("datasets/quickstart", "test"):
        ...

Errors are ``dfm.DfmError`` (a ``ValueError``) carrying dfm's message: the sample (or file and
line) and the field, e.g. ``sample 3: field `history[2].lat`: ...``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Union

import numpy as np

from . import _dfm
from ._dfm import DfmError

__all__ = ["load", "features", "read_dataset", "export_onnx", "Predictor", "DfmError",
           "__version__"]
__version__ = _dfm.__version__

Samples = Union[str, "os.PathLike[str]", Dict[str, Any], Iterable[Dict[str, Any]], Any]


def _is_frame(x: Any) -> bool:
    return type(x).__name__ == "DataFrame" and hasattr(x, "to_dict")


def _missing(v: Any) -> bool:
    """A DataFrame's empty cell (None or NaN): the sample has no such field."""
    return v is None or (isinstance(v, float) and v != v)


def _frame_rows(frame: Any) -> List[Dict[str, Any]]:
    rows = frame.to_dict(orient="records")
    return [{k: v for k, v in r.items() if not _missing(v)} for r in rows]


def _json_lines(samples: Samples) -> List[str]:
    """Each sample as JSON text."""
    if _is_frame(samples):
        samples = _frame_rows(samples)
    elif isinstance(samples, dict):
        samples = [samples]
    out = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise DfmError(f"sample {i}: a sample is a JSON object (dict), not {type(s).__name__}")
        out.append(json.dumps(s, allow_nan=False))
    return out


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


class Predictor:
    """A model loaded with :func:`load`."""

    def __init__(self, inner: Any):
        self._inner = inner

    @property
    def info(self) -> Dict[str, Any]:
        """What the model is (as ``GET /v1/model`` of ``dfm serve`` answers)."""
        return json.loads(self._inner.info_json())

    def predict(self, samples: Samples, batch_size: int = 64, as_frame: bool | None = None):
        """Predictions for samples: dicts (one or a list), a JSON-lines file's path, or a pandas
        DataFrame with a sample per row. Returns dicts (the JSON ``dfm predict`` writes), or a
        DataFrame when the samples came as one (or ``as_frame=True``)."""
        if not 1 <= batch_size <= 4096:
            raise DfmError(f"batch_size {batch_size}: outside [1, 4096]")
        single = isinstance(samples, dict)
        if as_frame is None:
            as_frame = _is_frame(samples)
        if _is_path(samples):
            texts = self._inner.predict_file(os.fspath(samples), batch_size)
        else:
            texts = self._inner.predict_json(_json_lines(samples), batch_size)
        preds = [json.loads(t) for t in texts]
        if as_frame:
            import pandas as pd

            return pd.DataFrame(preds)
        return preds[0] if single else preds

    def outputs(self, samples: Samples) -> Dict[str, np.ndarray]:
        """The model's outputs for samples before they are decoded into predictions (one
        forward pass, batch first): ``traj`` [B, K, F, 2] and ``point`` [B, F, 2] (normalized
        offsets in each sample's frame, at its horizons), ``mode_probability`` [B, K], ``eta``
        [B, N, 3] (the model's ETA units, quantiles 0.1/0.5/0.9), ``on_time_probability`` and
        ``next_probability`` [B, N], ``delivered_probability`` [B]. N: the stop slots of the
        batch (those its samples list)."""
        if _is_path(samples):
            samples = _read_jsonl(os.fspath(samples))
        return _arrays(self._inner.outputs_json(_json_lines(samples)))

    def features(self, samples: Samples) -> Dict[str, np.ndarray]:
        """The model's input arrays for samples (see :func:`features`)."""
        if _is_path(samples):
            samples = _read_jsonl(os.fspath(samples))
        return _arrays(self._inner.features_json(_json_lines(samples)))


def _arrays(named) -> Dict[str, np.ndarray]:
    """NumPy arrays from the extension's (name, shape, little-endian f32 bytes)."""
    return {name: np.frombuffer(data, dtype="<f4").reshape(shape) for name, shape, data in named}


def _read_jsonl(path: str) -> List[Dict[str, Any]]:
    """The samples of a JSON-lines file (read bounded by dfm; a bad line names the file and
    line)."""
    rows = []
    for n, line in _dfm.read_lines(path):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DfmError(f"{path}: line {n}: not JSON ({e})") from None
    return rows


def load(path: Union[str, "os.PathLike[str]"], device: str = "flex") -> Predictor:
    """Loads an export bundle (``dfm export``) or a run folder on ``device``: ``flex`` (the
    CPU), ``auto``, ``wgpu`` or ``cuda[:N]``."""
    return Predictor(_dfm.load(os.fspath(path), device))


def features(samples: Samples, model: Union[Predictor, str, "os.PathLike[str]"]) -> Dict[str, np.ndarray]:
    """The model's inputs for samples, as the model gets them: ``{name: array}``, batch first
    (``hist`` [B, H, C], ``hist_mask`` [B, H], ``imu``, ``image`` [B, 3, S, S], ``stops``
    [B, N, C], ``ctx``, ``prior`` [B, F, 2], their masks, ``video`` and ``future_w`` where the
    model has them). ``model``: a :class:`Predictor` or a bundle's path."""
    if not isinstance(model, Predictor):
        model = load(model)
    return model.features(samples)


def read_dataset(path: Union[str, "os.PathLike[str]"], split: str = "test") -> Iterator[Dict[str, Any]]:
    """The samples of a dataset's split (``train``, ``val``, ``test``, ``test_days``, ``all``)
    in stored order, as dicts in request form (images and sensor series inline) with their
    labels (``target``)."""
    texts = _dfm.read_dataset_json(os.fspath(path), split)  # errors here, not at the first next()
    return (json.loads(t) for t in texts)


def export_onnx(bundle: Union[str, "os.PathLike[str]"], out: Union[str, "os.PathLike[str]", None] = None) -> str:
    """Writes the bundle's model as ONNX (``model.onnx`` beside its weights, or ``out``) and
    returns its path: inputs are :func:`features`' arrays, outputs ``Predictor.outputs``'.
    Needs the ``onnx`` package; see ``dfm/onnx_export.py`` for what it covers."""
    from .onnx_export import export_onnx as export

    return export(bundle, out)
