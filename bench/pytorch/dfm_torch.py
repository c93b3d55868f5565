"""PyTorch twin of dfm's fusion transformer and training step, for timing against `dfm bench train`.

Same architecture and shapes as `src/model/` for a dfm config (TOML) and its dataset's shapes (the
`spec` of `data.path/manifest.json`, or dfm's defaults): history and IMU patch tokens, a 3x3 conv stem
and a strided patch conv for the image, one token per stop (features + Fourier features through a
2-layer MLP), one token per context group, video tubelets when the dataset has clips (a 1x1x1 conv stem
and a tubelet-strided 3D conv, plus a projection of the max over each tubelet of a wider 1x1x1 conv's
colour features, as in src/model/video.rs), learned modality embeddings and queries
(K modes + most likely + outcome), a
pre-norm transformer encoder (GELU MLP, key padding mask), a final LayerNorm, and the same heads
(trajectory modes, mode logits, ETA quantiles, on-time, delivered, next-stop pointer) and losses
(winner-takes-all ADE + mode NLL, pinball, BCE, pointer NLL), AdamW. The FLOPs are counted with the
same formula as `src/model/flops.rs`, so the two MFUs compare directly.

Inputs are random tensors of the right shapes built once on the device: this times the model's
training step (forward, backward, optimizer), which is what dfm's `compute_samples_per_s` measures.

  python3 bench/pytorch/dfm_torch.py --config configs/quickstart.toml --threads 2
  python3 bench/pytorch/dfm_torch.py --config configs/base.toml --device cuda --dtype bf16
"""

import argparse
import json
import math
import os
import sys
import time

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

HIST_CH, IMU_CH, STOP_CH, CTX_CH = 11, 4, 17, 21
CTX_GROUPS = [4, 5, 2, 4, 2, 4]  # time, weather, peak, road, zone, depot
FOURIER = 6
STEM = 16
VIDEO_STEM = 4
VIDEO_PEAK = 16  # colour features whose max over each tubelet is a token input
QUANTILES = (0.1, 0.5, 0.9)
DEFAULT_SPEC = dict(history_len=30, future_len=15, imu_len=300, max_stops=8, video_frames=0, video_size=0)
# `dfm data synth --video` (data.synth_video): 8 frames of 32 x 32.
SYNTH_VIDEO = dict(video_frames=8, video_size=32)
MODEL_DEFAULTS = dict(d_model=64, layers=2, heads=4, ff_mult=4, dropout=0.1, modes=6,
                      image_patch=8, history_patch=0, imu_patch=0, video_tubelet=4, video_patch=8)


def video_tokens(m, spec):
    if not spec.get("video_frames"):
        return 0
    return (spec["video_frames"] // m["video_tubelet"]) * (spec["video_size"] // m["video_patch"]) ** 2


def auto_patch(n, tokens=6):
    """dfm's config::auto_patch: the divisor of n whose token count is closest to 6 (fewer on a tie)."""
    n = max(n, 1)
    return min((p for p in range(1, n + 1) if n % p == 0), key=lambda p: (abs(n // p - tokens), n // p))


class DfmTorch(nn.Module):
    def __init__(self, m, spec, image_size):
        super().__init__()
        d = m["d_model"]
        self.m, self.spec, self.image_size = m, spec, image_size
        self.nh = spec["history_len"] // m["history_patch"]
        self.ni = spec["imu_len"] // m["imu_patch"]
        g = image_size // m["image_patch"]
        self.ng = g * g
        self.hist = nn.Linear(m["history_patch"] * HIST_CH, d)
        self.hist_pos = nn.Parameter(torch.randn(self.nh, d) * 0.02)
        self.imu = nn.Linear(m["imu_patch"] * IMU_CH, d)
        self.imu_pos = nn.Parameter(torch.randn(self.ni, d) * 0.02)
        self.stem = nn.Conv2d(3, STEM, 3, padding=1)
        self.patchify = nn.Conv2d(STEM, d, m["image_patch"], stride=m["image_patch"])
        self.img_pos = nn.Parameter(torch.randn(self.ng, d) * 0.02)
        self.nv = video_tokens(m, spec)
        if self.nv:
            t, p = m["video_tubelet"], m["video_patch"]
            self.video_stem = nn.Conv3d(3, VIDEO_STEM, 1)
            self.tubelet = nn.Conv3d(VIDEO_STEM, d, (t, p, p), stride=(t, p, p))
            self.peak_stem = nn.Conv3d(3, VIDEO_PEAK, 1)
            self.peak = nn.Linear(VIDEO_PEAK, d)
            self.video_pool = nn.MaxPool3d((t, p, p))
            self.video_pos = nn.Parameter(torch.randn(self.nv, d) * 0.02)
            self.video_modality = nn.Parameter(torch.randn(d) * 0.02)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(FOURIER, dtype=torch.float32))
        self.stop1 = nn.Linear(STOP_CH + 4 * FOURIER, d)
        self.stop2 = nn.Linear(d, d)
        self.ctx = nn.ModuleList([nn.Linear(n, d) for n in CTX_GROUPS])
        self.modality = nn.Parameter(torch.randn(6, d) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.queries = nn.Parameter(torch.randn(m["modes"] + 2, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, m["heads"], d * m["ff_mult"], dropout=m["dropout"],
                                           activation="gelu", batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, m["layers"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        f = spec["future_len"]
        self.traj1, self.traj2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, 2 * f)
        self.point1, self.point2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, 2 * f)
        self.mode, self.delivered = nn.Linear(d, 1), nn.Linear(d, 1)
        self.sh, self.eta = nn.Linear(d, d), nn.Linear(d, 3)
        self.on_time, self.next = nn.Linear(d, 1), nn.Linear(d, 1)
        # Reconstruction decoders (pretraining; idle in a supervised step, as in dfm).
        self.rec_hist = nn.Linear(d, m["history_patch"] * HIST_CH)
        self.rec_imu = nn.Linear(d, m["imu_patch"] * IMU_CH)
        self.rec_stops = nn.Linear(d, STOP_CH)
        self.prior_gate = nn.Parameter(torch.tensor([1.0] + [0.0] * (m["modes"] - 1) + [1.0]))

    def forward(self, b):
        B = b["hist"].shape[0]
        mp = self.m
        h = self.hist(b["hist"].reshape(B, self.nh, -1)) + self.hist_pos + self.modality[0]
        i = self.imu(b["imu"].reshape(B, self.ni, -1)) + self.imu_pos + self.modality[1]
        x = self.patchify(F.gelu(self.stem(b["image"])))
        g = x.flatten(2).transpose(1, 2) + self.img_pos + self.modality[2]
        st = b["stops"]
        ang = st[..., :2].unsqueeze(-1) * self.freqs
        four = torch.cat([ang.sin(), ang.cos()], -1).flatten(2)
        s = self.stop2(F.gelu(self.stop1(torch.cat([st, four], -1)))) + self.modality[3]
        parts, o = [], 0
        for lin, n in zip(self.ctx, CTX_GROUPS):
            parts.append(lin(b["ctx"][:, o:o + n]).unsqueeze(1))
            o += n
        c = torch.cat(parts, 1) + self.modality[4]
        q = self.queries.unsqueeze(0).expand(B, -1, -1) + self.modality[5]
        parts = [h, i, g, s, c]
        if self.nv:
            f = F.gelu(self.video_stem(b["video"]))
            v = self.tubelet(f).flatten(2).transpose(1, 2)
            colours = F.gelu(self.peak_stem(b["video"]))
            v = v + self.peak(self.video_pool(colours).flatten(2).transpose(1, 2))
            parts.append(v + self.video_pos + self.video_modality)
        tokens = torch.cat(parts + [q], 1)
        out = self.norm(self.fusion(tokens, src_key_padding_mask=b["pad"]))
        k, n = mp["modes"], st.shape[1]
        s0 = self.nh + self.ni + self.ng
        q0 = s0 + n + len(CTX_GROUPS) + self.nv
        mode_h, out_h, stop_h = out[:, q0:q0 + k + 1], out[:, q0 + k + 1], out[:, s0:s0 + n]
        traj = self.traj2(F.gelu(self.traj1(mode_h[:, :k]))).reshape(B, k, -1, 2)
        point = self.point2(F.gelu(self.point1(mode_h[:, k]))).reshape(B, -1, 2)
        traj = traj + b["prior"].unsqueeze(1) * self.prior_gate[:k].reshape(1, k, 1, 1)
        point = point + b["prior"] * self.prior_gate[k]
        sh = F.gelu(self.sh(stop_h))
        raw = self.eta(sh)
        mid = raw[..., 1:2]
        eta = torch.cat([mid - F.softplus(raw[..., 0:1]), mid, mid + F.softplus(raw[..., 2:3])], -1)
        return dict(traj=traj, point=point, mode=self.mode(mode_h[:, :k]).squeeze(-1), eta=eta,
                    on_time=self.on_time(sh).squeeze(-1), next=self.next(sh).squeeze(-1),
                    delivered=self.delivered(out_h).squeeze(-1))


def loss_fn(o, t):
    ade = (o["traj"] - t["future"].unsqueeze(1)).norm(dim=-1).mean(-1)  # [B, K]
    best, idx = ade.min(1)
    loss = best.mean() + F.cross_entropy(o["mode"], idx)
    loss = loss + (o["point"] - t["future"]).norm(dim=-1).mean()
    e = t["eta"].unsqueeze(-1) - o["eta"]
    q = torch.tensor(QUANTILES, device=e.device, dtype=e.dtype)
    loss = loss + torch.maximum(e * q, e * (q - 1)).mean()
    loss = loss + F.binary_cross_entropy_with_logits(o["on_time"], t["on_time"])
    loss = loss + F.binary_cross_entropy_with_logits(o["delivered"], t["delivered"])
    return loss + F.cross_entropy(o["next"], t["next"])


def forward_flops(m, spec, image_size):
    """Matmul and conv FLOPs per sample, forward; the formula of src/model/flops.rs."""
    d, ff, k, f = m["d_model"], m["d_model"] * m["ff_mult"], m["modes"], spec["future_len"]
    nh, ni = spec["history_len"] // m["history_patch"], spec["imu_len"] // m["imu_patch"]
    ng, ns = (image_size // m["image_patch"]) ** 2, spec["max_stops"]
    nv = video_tokens(m, spec)
    n = nh + ni + ng + ns + len(CTX_GROUPS) + nv + k + 2
    lin = lambda t, a, b: 2 * t * a * b
    x = lin(nh, m["history_patch"] * HIST_CH, d) + lin(ni, m["imu_patch"] * IMU_CH, d)
    x += 2 * image_size * image_size * 27 * STEM + 2 * ng * STEM * m["image_patch"] ** 2 * d
    if nv:
        x += 2 * spec["video_frames"] * spec["video_size"] ** 2 * 3 * VIDEO_STEM
        x += 2 * nv * VIDEO_STEM * m["video_tubelet"] * m["video_patch"] ** 2 * d
        x += 2 * spec["video_frames"] * spec["video_size"] ** 2 * 3 * VIDEO_PEAK  # peak colours
        x += 2 * nv * VIDEO_PEAK * d  # tubelet peaks
    x += lin(ns, STOP_CH + 4 * FOURIER, d) + lin(ns, d, d) + sum(lin(1, g, d) for g in CTX_GROUPS)
    x += m["layers"] * (lin(4 * n, d, d) + 4 * n * n * d + lin(n, d, ff) + lin(n, ff, d))
    x += lin(k + 1, d, 2 * d) + lin(k + 1, 2 * d, 2 * f) + lin(k, d, 1) + lin(1, d, 1)  # modes + most likely
    x += lin(ns, d, d) + lin(ns, d, 3) + lin(ns, d, 1) + lin(ns, d, 1)
    return float(x), n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=0, help="default: the config's train.batch_size")
    ap.add_argument("--matmul-size", type=int, default=0, help="default 1024 on CPU, 8192 on GPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--json")
    a = ap.parse_args()
    cfg = tomllib.load(open(a.config, "rb"))
    m = dict(MODEL_DEFAULTS, **cfg.get("model", {}))
    data = cfg.get("data", {})
    image_size = data.get("image_size", 32)
    spec = dict(DEFAULT_SPEC)
    manifest = os.path.join(data.get("path", ""), "manifest.json")
    if os.path.isfile(manifest):
        spec.update(json.load(open(manifest))["spec"])
    elif data.get("synth_video"):
        spec.update(SYNTH_VIDEO)
    for key, length in (("history_patch", "history_len"), ("imu_patch", "imu_len")):
        if not m[key]:
            m[key] = auto_patch(spec[length])
    bs = a.batch_size or cfg.get("train", {}).get("batch_size", 32)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = DfmTorch(m, spec, image_size).to(dev)
    fwd, n_tokens = forward_flops(m, spec, image_size)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    step_model = torch.compile(model) if a.compile else model
    ns = spec["max_stops"]
    r = lambda *s: torch.randn(*s, device=dev)
    batch = dict(hist=r(bs, spec["history_len"], HIST_CH), imu=r(bs, spec["imu_len"], IMU_CH),
                 image=r(bs, 3, image_size, image_size), stops=r(bs, ns, STOP_CH), ctx=r(bs, CTX_CH),
                 prior=r(bs, spec["future_len"], 2),
                 video=r(bs, 3, spec["video_frames"], spec["video_size"], spec["video_size"])
                 if spec.get("video_frames") else None,
                 pad=torch.zeros(bs, n_tokens, dtype=torch.bool, device=dev))
    tgt = dict(future=r(bs, spec["future_len"], 2), eta=r(bs, ns), on_time=torch.rand(bs, ns, device=dev).round(),
               delivered=torch.rand(bs, device=dev).round(), next=torch.randint(0, ns, (bs,), device=dev))
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=a.dtype == "bf16"):
            loss = loss_fn(step_model(batch), tgt)
        loss.backward()
        opt.step()
        return loss

    model.train()
    for _ in range(a.warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        last = step()
    sync()
    dt = (time.perf_counter() - t) / a.steps
    loss = float(last.detach())
    mm_n = a.matmul_size or (1024 if dev.type == "cpu" else 8192)
    x = torch.randn(mm_n, mm_n, device=dev, dtype=dtype)
    y = torch.randn(mm_n, mm_n, device=dev, dtype=dtype)
    (x @ y).sum().item()
    sync()
    t2 = time.perf_counter()
    reps = 5
    for i in range(reps):
        ((x + i) @ y).sum().item()
    sync()
    peak = reps * 2 * mm_n ** 3 / (time.perf_counter() - t2)
    sps = bs / dt
    res = dict(bench="pytorch_train", torch=torch.__version__, config=a.config, device=str(dev),
               dtype=a.dtype, threads=torch.get_num_threads(), batch_size=bs, params=params,
               tokens_per_sample=n_tokens, step_ms=dt * 1e3, samples_per_s=sps,
               flops_per_sample=3 * fwd, achieved_flops=3 * fwd * sps, peak_flops=peak,
               matmul_size=mm_n, mfu=3 * fwd * sps / peak, loss=loss)
    print(f"pytorch {torch.__version__} {a.dtype} on {dev} ({res['threads']} threads): {a.config}, batch {bs}, "
          f"{params} parameters, {n_tokens} tokens")
    print(f"  step {dt * 1e3:.2f} ms, {sps:.1f} samples/s, {3 * fwd * sps / 1e9:.2f} GFLOP/s; "
          f"matmul peak {peak / 1e9:.2f} GFLOP/s ({mm_n}^3); MFU {res['mfu']:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
