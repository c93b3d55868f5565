"""The model as an ONNX graph (``dfm.export_onnx``), for ONNX Runtime and the servers built on it.

burn exports no ONNX, so the graph is written here op for op after ``src/model/`` (the
encoders, the fusion transformer, the heads, the constant-velocity prior and its gates, the
support guard and the rule prior, dashcam tubelets), with the weights of the bundle's
``model.safetensors``. Its inputs are the arrays of :func:`dfm.features` and its outputs those
of ``Predictor.outputs`` (same names and shapes, batch and stop count dynamic); the package's
tests check it against dfm with ONNX Runtime. For requests with ``horizons_s``, feed
``future_w`` (from :func:`dfm.features`); without it the graph answers at the model's own
horizons.

Needs the ``onnx`` package (``pip install onnx``; ``onnxruntime`` to run the result).
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Dict, List

import numpy as np

INPUTS = ["hist", "hist_mask", "imu", "imu_mask", "image", "image_mask", "stops", "stops_mask",
          "ctx", "prior"]
VIDEO_INPUTS = ["video", "video_mask"]
# An input with a default (the identity): fed only for requests with `horizons_s`.
HORIZON_INPUT = "future_w"
OUTPUTS = ["traj", "point", "mode_probability", "eta", "on_time_probability", "next_probability",
           "delivered_probability"]
OPSET = 18
MAX_HEADER = 16 << 20


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """The f32 tensors of a safetensors file (a bounded header, every entry checked)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (no header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise ValueError(f"{path}: header of {n} bytes (more than {MAX_HEADER})")
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e.get("dtype") != "F32":
            raise ValueError(f"{path}: tensor {name}: dtype {e.get('dtype')}, not F32")
        a, b = e["data_offsets"]
        if not 0 <= a <= b <= len(body) or b - a != 4 * int(np.prod(e["shape"], dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: data_offsets {a}..{b} do not fit its shape")
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(e["shape"]).copy()
    return out


class Graph:
    """ONNX nodes and initializers under construction."""

    def __init__(self, weights: Dict[str, np.ndarray]):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.w = weights
        self.nodes: List = []
        self.inits: List = []
        self.weights_added: set = set()
        self.n = 0

    def const(self, value, dtype=np.float32) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(self.nh.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, *v) -> str:
        return self.const(list(v), np.int64)

    def weight(self, name: str) -> str:
        if name not in self.w:
            raise ValueError(f"model.safetensors has no tensor {name}")
        if name not in self.weights_added:
            self.weights_added.add(name)
            self.inits.append(self.nh.from_array(self.w[name], name))
        return name

    def op(self, kind: str, *inputs: str, out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"t{self.n}"
        self.nodes.append(self.h.make_node(kind, list(inputs), [out], **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        y = self.op("MatMul", x, self.weight(prefix + ".weight"))
        return self.op("Add", y, self.weight(prefix + ".bias"))

    def gelu(self, x: str) -> str:
        e = self.op("Erf", self.op("Div", x, self.const(math.sqrt(2.0))))
        return self.op("Mul", self.op("Mul", x, self.const(0.5)), self.op("Add", e, self.const(1.0)))

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op("LayerNormalization", x, self.weight(prefix + ".gamma"),
                       self.weight(prefix + ".beta"), axis=-1, epsilon=1e-5)

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", x, self.ints(start), self.ints(end), self.ints(axis))

    def reshape(self, x: str, *shape: int) -> str:
        return self.op("Reshape", x, self.ints(*shape))

    def repeat(self, mask_b: str, n: int) -> str:
        """A per-sample value [B] as [B, n]."""
        return self.op("Expand", self.op("Unsqueeze", mask_b, self.ints(1)), self.ints(1, n))


def _patch_tokens(g: Graph, x: str, prefix: str, modality: int, tokens: int) -> str:
    """A sensor series [B, T, C] as patch tokens [B, T/p, d], position and modality added."""
    p = g.reshape(x, 0, tokens, -1)
    t = g.op("Add", g.linear(p, prefix + ".proj"), g.weight(prefix + ".pos"))
    return _with_modality(g, t, modality)


def _with_modality(g: Graph, x: str, m: int) -> str:
    emb = g.const(g.w["enc.modality"][m][None, None, :])
    return g.op("Add", x, emb)


def _image_tokens(g: Graph, d: int) -> str:
    s = g.op("Conv", "image", g.weight("enc.image.stem.weight"), g.weight("enc.image.stem.bias"),
             pads=[1, 1, 1, 1])
    w = g.w["enc.image.patchify.weight"]
    p = g.op("Conv", g.gelu(s), g.weight("enc.image.patchify.weight"),
             g.weight("enc.image.patchify.bias"), strides=[w.shape[2], w.shape[3]])
    t = g.op("Transpose", g.reshape(p, 0, d, -1), perm=[0, 2, 1])
    return _with_modality(g, g.op("Add", t, g.weight("enc.image.pos")), 2)


def _stop_tokens(g: Graph, fourier: int) -> str:
    xy = g.slice("stops", 0, 2, 2)
    freqs = g.const((np.pi * 2.0 ** np.arange(fourier)).astype(np.float32).reshape(1, 1, 1, fourier))
    ang = g.op("Mul", g.op("Unsqueeze", xy, g.ints(3)), freqs)
    four = g.reshape(g.op("Concat", g.op("Sin", ang), g.op("Cos", ang), axis=3), 0, 0, 4 * fourier)
    x = g.op("Concat", "stops", four, axis=2)
    t = g.linear(g.gelu(g.linear(x, "enc.stops.fc1")), "enc.stops.fc2")
    return _with_modality(g, t, 3)


def _ctx_tokens(g: Graph, groups) -> str:
    toks = []
    for i, (a, b) in enumerate(groups):
        t = g.linear(g.slice("ctx", a, b, 1), f"enc.ctx.groups.{i}")
        toks.append(g.op("Unsqueeze", t, g.ints(1)))
    return _with_modality(g, g.op("Concat", *toks, axis=1), 4)


def _tubelets(g: Graph, x: str, ft: int, p: int, t: int, side: int, c: int) -> str:
    """[B, T, S, S, C] as tubelets [B, (T/ft)(S/p)^2, ft p p C] (`model::video::tubelets`)."""
    gt, gh, gw = t // ft, side // p, side // p
    x = g.op("Transpose", g.reshape(x, -1, ft, gh, p, gw * p * c), perm=[0, 2, 1, 3, 4])
    x = g.op("Transpose", g.reshape(x, -1, ft * p, gw, p * c), perm=[0, 2, 1, 3])
    return g.reshape(x, -1, gt * gh * gw, ft * p * p * c)


def _video_tokens(g: Graph, model: dict, spec: dict) -> str:
    """The clip's tubelet tokens: a linear stem's tubelets, plus each tubelet's peak colours."""
    ft, p = model["video_tubelet"], model["video_patch"]
    t, side = spec["video_frames"], spec["video_size"]
    stem, peak = (g.w[f"enc.video.{n}.weight"].shape[1] for n in ("stem", "peak_stem"))
    f = g.gelu(g.linear("video", "enc.video.stem"))
    tubes = _tubelets(g, f, ft, p, t, side, stem)
    colours = _tubelets(g, g.gelu(g.linear("video", "enc.video.peak_stem")), ft, p, t, side, peak)
    n = (t // ft) * (side // p) ** 2
    peaks = g.op("ReduceMax", g.reshape(colours, 0, n, -1, peak), g.ints(2), keepdims=0)
    x = g.op("Add", g.linear(tubes, "enc.video.tubelet"), g.linear(peaks, "enc.video.peak"))
    x = g.op("Add", x, g.weight("enc.video.pos"))
    return g.op("Add", x, g.const(g.w["enc.video.modality"][None, None, :]))


def _fusion(g: Graph, x: str, pad_bias: str, layers: int, heads: int, d: int) -> str:
    dk = d // heads
    for i in range(layers):
        p = f"enc.fusion.layers.{i}"
        n2 = g.layer_norm(x, p + ".norm_2")
        q, k, v = (g.op("Transpose", g.reshape(g.linear(n2, f"{p}.mha.{w}"), 0, 0, heads, dk),
                        perm=[0, 2, 1, 3]) for w in ("query", "key", "value"))
        kt = g.op("Transpose", k, perm=[0, 1, 3, 2])
        scores = g.op("Div", g.op("MatMul", q, kt), g.const(math.sqrt(dk)))
        w = g.op("Softmax", g.op("Add", scores, pad_bias), axis=3)
        ctx = g.reshape(g.op("Transpose", g.op("MatMul", w, v), perm=[0, 2, 1, 3]), 0, 0, d)
        x = g.op("Add", x, g.linear(ctx, p + ".mha.output"))
        n1 = g.layer_norm(x, p + ".norm_1")
        f = g.linear(g.gelu(g.linear(n1, p + ".pwff.linear_inner")), p + ".pwff.linear_outer")
        x = g.op("Add", x, f)
    return g.layer_norm(x, "enc.norm")


def _softplus(g: Graph, x: str) -> str:
    # burn's softplus returns x itself past a threshold of 20 (ln(1 + e^x) == x in f32 there).
    return g.op("Where", g.op("Greater", x, g.const(20.0)), x, g.op("Softplus", x))


def _heads(g: Graph, h: str, k: int, f: int, tail: int, stop0: int, motion: str):
    """The heads on the fused tokens: (traj, point, mode_logits, eta, on_time, next, delivered)
    before the priors; `tail` tokens follow the stops (context, queries)."""
    mode_h = g.slice(h, -(k + 2), -2, 1)
    point_q = g.slice(h, -2, -1, 1)
    out_h = g.reshape(g.slice(h, -1, 2 ** 62, 1), 0, -1)
    stop_h = g.slice(h, stop0, -tail, 1)
    modes_h = g.gelu(g.linear(mode_h, "heads.traj1"))
    traj = g.reshape(g.linear(modes_h, "heads.traj2"), 0, k, f, 2)
    point_h = g.gelu(g.linear(point_q, "heads.point1"))
    point = g.reshape(g.linear(point_h, "heads.point2"), 0, f, 2)
    if "heads.traj_rel.weight" in g.w:
        m = g.reshape(motion, -1, 1, 1)
        rel = g.reshape(g.linear(modes_h, "heads.traj_rel"), 0, k, f, 2)
        traj = g.op("Add", traj, g.op("Mul", rel, g.op("Unsqueeze", m, g.ints(1))))
        prel = g.reshape(g.linear(point_h, "heads.point_rel"), 0, f, 2)
        point = g.op("Add", point, g.op("Mul", prel, m))
    mode_logits = g.reshape(g.linear(mode_h, "heads.mode"), 0, k)
    delivered = g.reshape(g.linear(out_h, "heads.delivered"), -1)
    s = g.gelu(g.linear(stop_h, "heads.stop1"))
    raw = g.linear(s, "heads.eta")
    mid = g.slice(raw, 1, 2, 2)
    lo = g.op("Sub", mid, _softplus(g, g.slice(raw, 0, 1, 2)))
    hi = g.op("Add", mid, _softplus(g, g.slice(raw, 2, 3, 2)))
    eta = g.op("Concat", lo, mid, hi, axis=2)
    on_time = g.reshape(g.linear(s, "heads.on_time"), 0, -1)
    nxt = g.reshape(g.linear(s, "heads.next"), 0, -1)
    return traj, point, mode_logits, eta, on_time, nxt, delivered


def _valid(g: Graph, nh: int, ni: int, ng: int, nc: int, nv: int, nq: int) -> str:
    """Which tokens attend [B, n]: a history patch with any row present, the IMU, image and
    video tokens where they are present, listed stops, every context token and query."""
    hist = g.op("ReduceMax", g.reshape("hist_mask", 0, nh, -1), g.ints(2), keepdims=0)
    ones = g.op("Add", g.op("Mul", "image_mask", g.const(0.0)), g.const(1.0))
    parts = [hist, g.repeat("imu_mask", ni), g.repeat("image_mask", ng), "stops_mask",
             g.repeat(ones, nc)]
    if nv:
        parts.append(g.repeat("video_mask", nv))
    return g.op("Concat", *parts, g.repeat(ones, nq), axis=1)


def _at_horizons(g: Graph, traj: str, point: str, f: int) -> tuple:
    """The trajectories at a request's horizons: `future_w` [B, F', F] blends the model's F
    knots (`time_grid`); its default, the identity, keeps the model's own horizons."""
    w = "future_w"
    g.inits.append(g.nh.from_array(np.eye(f, dtype=np.float32)[None], w))
    traj = g.op("MatMul", g.op("Unsqueeze", w, g.ints(1)), traj)
    return traj, g.op("MatMul", w, point)


def _priors(g: Graph, traj, point, nxt, k: int, layout) -> tuple:
    """The constant-velocity prior through its gates, the support guard, the rule prior."""
    gate = g.w["prior_gate"]
    cv = "prior"
    point = g.op("Add", point, g.op("Mul", cv, g.const(gate[k])))
    traj = g.op("Add", traj, g.op("Mul", g.op("Unsqueeze", cv, g.ints(1)),
                                  g.const(gate[:k].reshape(1, k, 1, 1))))
    if "support_q99" in g.w:
        q = float(g.w["support_q99"].reshape(-1)[0])
        s = _motion(g, layout)
        f = g.op("Clip", g.op("Div", g.op("Sub", g.const(2.0 * q), s), g.const(q)),
                 g.const(0.0), g.const(1.0))
        point = g.op("Add", cv, g.op("Mul", g.op("Sub", point, cv), g.reshape(f, -1, 1, 1)))
    valid = "stops_mask"
    nxt = g.op("Where", g.op("Less", valid, g.const(0.5)), g.const(-1e4), nxt)
    if "next_prior" in g.w:
        scale = float(g.w["next_prior"].reshape(-1)[0])
        r = layout["stop_rule_rank"]
        scaled = g.op("Squeeze", g.slice("stops", r, r + 1, 2), g.ints(2))
        listed = g.op("ReduceSum", "stops_mask", g.ints(1), keepdims=1)
        place = g.op("Mul", scaled, g.op("Max", g.op("Sub", listed, g.const(1.0)), g.const(0.0)))
        prior = g.op("Mul", g.op("Mul", g.op("Log", g.op("Add", place, g.const(1.0))),
                                 g.const(-scale)), valid)
        nxt = g.op("Add", nxt, prior)
    return traj, point, nxt


def _motion(g: Graph, layout) -> str:
    """Each sample's motion scale [B]: exp of the last history row's log-scale channel."""
    c = layout["hist_log_scale"]
    last = g.slice(g.slice("hist", -1, 2 ** 62, 1), c, c + 1, 2)
    return g.op("Exp", g.reshape(last, -1))


def build(weights: Dict[str, np.ndarray], model: dict, spec: dict, layout: dict):
    """The ONNX model of a dfm model: its weights, its `model` config and data `spec`, the
    feature layout."""
    from onnx import TensorProto, helper

    g = Graph(weights)
    video = "enc.video.pos" in weights
    nv = weights["enc.video.pos"].shape[0] if video else 0
    d, k, heads, layers = model["d_model"], model["modes"], model["heads"], model["layers"]
    f = weights["heads.point2.weight"].shape[1] // 2
    nh, ni = weights["enc.hist.pos"].shape[0], weights["enc.imu.pos"].shape[0]
    ng, nc = weights["enc.image.pos"].shape[0], len(layout["ctx_groups"])
    queries = weights["queries"] + weights["enc.modality"][5][None, :]
    qb = g.op("Add", g.op("Unsqueeze", g.op("Mul", "image_mask", g.const(0.0)), g.ints(1, 2)),
              g.const(queries))
    parts = [_patch_tokens(g, "hist", "enc.hist", 0, nh), _patch_tokens(g, "imu", "enc.imu", 1, ni),
             _image_tokens(g, d), _stop_tokens(g, layout["stop_fourier"]),
             _ctx_tokens(g, layout["ctx_groups"])]
    if video:
        parts.append(_video_tokens(g, model, spec))
    tokens = g.op("Concat", *parts, qb, axis=1)
    valid = _valid(g, nh, ni, ng, nc, nv, k + 2)
    # -1e4 where a token is padding, as the fusion encoder's mask fill.
    pad = g.op("Mul", g.op("Cast", g.op("Less", valid, g.const(0.5)), to=TensorProto.FLOAT),
               g.const(-1e4))
    pad_bias = g.op("Unsqueeze", pad, g.ints(1, 2))
    h = _fusion(g, tokens, pad_bias, layers, heads, d)
    motion = _motion(g, layout)
    traj, point, logits, eta, on_time, nxt, delivered = _heads(
        g, h, k, f, nc + nv + k + 2, nh + ni + ng, motion)
    traj, point = _at_horizons(g, traj, point, f)
    traj, point, nxt = _priors(g, traj, point, nxt, k, layout)
    g.op("Identity", traj, out="traj")
    g.op("Identity", point, out="point")
    g.op("Softmax", logits, axis=1, out="mode_probability")
    g.op("Identity", eta, out="eta")
    g.op("Sigmoid", on_time, out="on_time_probability")
    g.op("Softmax", nxt, axis=1, out="next_probability")
    g.op("Sigmoid", delivered, out="delivered_probability")
    return _model(g, helper, TensorProto, k, f, video)


def _model(g: Graph, helper, TensorProto, k: int, f: int, video: bool):
    shapes = {
        "hist": ["B", "H", "HC"], "hist_mask": ["B", "H"], "imu": ["B", "T", 4],
        "imu_mask": ["B"], "image": ["B", 3, "S", "S"], "image_mask": ["B"],
        "stops": ["B", "N", "SC"], "stops_mask": ["B", "N"], "ctx": ["B", "CC"],
        "prior": ["B", "F", 2], "video": ["B", "VT", "VS", "VS", 3], "video_mask": ["B"],
        "future_w": ["B", "F", f],
        "traj": ["B", k, "F", 2], "point": ["B", "F", 2], "mode_probability": ["B", k],
        "eta": ["B", "N", 3], "on_time_probability": ["B", "N"], "next_probability": ["B", "N"],
        "delivered_probability": ["B"],
    }
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n])
    inputs = INPUTS + (VIDEO_INPUTS if video else []) + [HORIZON_INPUT]
    graph = helper.make_graph(g.nodes, "dfm", [vi(n) for n in inputs], [vi(n) for n in OUTPUTS],
                              g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="dfm")
    m.ir_version = 8
    return m


def export_onnx(bundle, out=None) -> str:
    """Writes ``model.onnx`` for an export bundle (beside its weights, or to ``out``); returns
    its path. Inputs: :func:`dfm.features`' arrays; outputs: ``Predictor.outputs``' arrays."""
    import onnx

    from . import _dfm, load

    bundle = os.fspath(bundle)
    info = load(bundle).info
    weights = read_safetensors(os.path.join(bundle, "model.safetensors"))
    model = build(weights, info["model"], info["spec"], json.loads(_dfm.layout_json()))
    onnx.checker.check_model(model)
    path = os.fspath(out) if out is not None else os.path.join(bundle, "model.onnx")
    tmp = path + ".partial"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path


def main(argv=None) -> None:
    """``python -m dfm.onnx_export BUNDLE [OUT]``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        sys.exit("usage: python -m dfm.onnx_export BUNDLE [OUT]")
    print(export_onnx(*args))


if __name__ == "__main__":
    main()
