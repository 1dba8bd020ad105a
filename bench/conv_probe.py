"""Can a Winograd 3x3 conv beat TensorFlow's own on CPU? One residual-block conv, fwd + bwd.

Prints figures; not a test. ResNet-9's residual conv at 256 px: (1, 66, 66, 256),
reflection-padded -> 3x3 'valid' conv + bias -> (1, 64, 64, 256), NHWC. A call is a
tf.function (jit_compile True/False): sum(y * fixed random upstream) and its
gradients w.r.t. input, kernel and bias.

    direct    tf.nn.conv2d + bias (the baseline)
    wino2-sl  Winograd F(2x2, 3x3): 4x4 tiles at stride 2 by strided slices,
              B^T d B and A^T m A as separable sums of slices (elementwise ops)
    wino2-rs  F(2x2, 3x3): tiles by reshapes + concat, each transform one small
              matmul with kron(B^T, B^T) / kron(A^T, A^T)
    wino2-pt  as wino2-rs, tiles by tf.image.extract_patches
    wino4-*   F(4x4, 3x3), 6x6 tiles at stride 4, likewise (wino4-sl: not run by
              default, its autodiff under XLA is ~6x slower than direct)

All: G g G^T per call, one batched tf.matmul [alpha^2, tiles, Cin] @ [alpha^2,
Cin, Cout], autodiff. Error: max |variant - float64 direct| / max |float64 direct|.
Each environment is a sub-process (XLA_FLAGS, TF_ENABLE_ONEDNN_OPTS are read at
start-up; an unknown XLA flag aborts it: reported as failed) that compiles, warms
up, then times rounds on demand (reps per variant, order rotated). "ms": median;
"vs dir": ratio to direct at the same XLA setting; "vs def": ratio to the default
environment's process, timed round by round alternately with it (< 1: the change
helps). GFLOP/s counts 3 x direct-conv FLOPs (2 * MACs) for every variant.

    python bench/conv_probe.py             # all, ~3-4 minutes on 2 shared cores
    python bench/conv_probe.py --no-env --variants direct,wino4-sl --jit on,off
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

if "--child" in sys.argv:  # only the measuring sub-processes load TensorFlow
    import tensorflow as tf

H, C, K, OUT = 66, 256, 3, 64
GFLOP = 3 * 2 * OUT * OUT * C * C * K * K / 1e9
VARIANTS = "direct,wino2-sl,wino2-rs,wino2-pt,wino4-rs,wino4-pt"
XLA_FLAGS = [f"--xla_cpu_{f}" for f in (  # each accepted by this TF 2.21 build; XLA on
    "enable_fast_math=true", "use_thunk_runtime=false", "use_xnnpack=false", "use_onednn=true",
    "experimental_ynn_fusion_type=", "experimental_ynn_fusion_type=-individual_dot")]
ENVS = [({"XLA_FLAGS": f}, "on", "direct,wino4-rs") for f in XLA_FLAGS]
ENVS.append(({"TF_ENABLE_ONEDNN_OPTS": "0"}, "off", "direct,wino4-pt"))

# Winograd matrices (Lavin & Gray 2015): Y = A^T [(G g G^T) * (B^T d B)] A.
F2 = dict(m=2, BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
          G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
          AT=[[1, 1, 1, 0], [0, 1, -1, -1]])
if "--child" in sys.argv:  # F(4x4, 3x3) as stainvirt trains with it
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from stainvirt.models import winograd as _w

    F4 = dict(m=4, BT=_w._BT.tolist(), G=_w._G.tolist(), AT=_w._AT.tolist())


def combo(terms):
    """Sum of coef * tensor over nonzero coefs: one AddN, plain adds once XLA fuses them."""
    return tf.add_n([t if c == 1 else -t if c == -1 else c * t for c, t in terms if c != 0])


def tiles_by_reshape(x, m, a, n):
    """(1, H, W, C) -> (1, n, a, n, a, C) tiles d[ti, u, tj, v] = x[m*ti+u, m*tj+v]."""
    extra = max(0, m * (n + 1) - x.shape[1])  # the padded zeros are never used
    x = tf.pad(x, [[0, 0], [0, extra], [0, extra], [0, 0]]) if extra else x
    for axis in (1, 3):  # rows, then columns: phase planes of stride m, two of them shifted
        shape, pre = x.shape.as_list(), (slice(None),) * axis
        split = shape[:axis] + [n, m] + shape[axis + 1:]
        lo, hi = (tf.reshape(x[pre + (slice(s, s + m * n),)], split) for s in (0, m))
        x = tf.concat([lo, hi[pre + (slice(None), slice(0, a - m))]], axis + 1)
    return x


def winograd(x, k, bias, spec, mode):
    """3x3 valid conv of x (1, H, W, Cin) by k (3, 3, Cin, Cout): Winograd F(m x m, 3x3)."""
    m, bt, at = spec["m"], np.array(spec["BT"]), np.array(spec["AT"])
    a, n, cin, cout = m + 2, (x.shape[1] - 2) // m, k.shape[2], k.shape[3]  # tile, tiles/side
    if mode == "sl":  # rows of B^T on the image, then columns on each result
        span = m * (n - 1) + 1  # length of a stride-m slice that gives n tiles
        rows = [combo((bt[i, u], x[:, u:u + span:m]) for u in range(a)) for i in range(a)]
        v = [combo((bt[j, w], r[:, :, w:w + span:m]) for w in range(a))
             for r in rows for j in range(a)]
        v = tf.reshape(tf.stack(v), (a * a, n * n, cin))
    else:
        if mode == "pt":
            d = tf.image.extract_patches(x, [1, a, a, 1], [1, m, m, 1], [1, 1, 1, 1], "VALID")
        else:
            d = tf.transpose(tiles_by_reshape(x, m, a, n), (0, 1, 3, 2, 4, 5))
        d = tf.reshape(d, (n * n, a * a, cin))
        v = tf.einsum("st,ntc->snc", tf.constant(np.kron(bt, bt), tf.float32), d)
    g = tf.constant(spec["G"], tf.float32)
    u = tf.reshape(tf.einsum("iu,uvco,jv->ijco", g, k, g), (a * a, cin, cout))
    mm = tf.matmul(v, u)  # (a*a, tiles, cout): the only O(C^2) work
    if mode == "sl":
        mm = tf.reshape(mm, (a, a, n, n, cout))
        cols = [combo((at[q, j], mm[:, j]) for j in range(a)) for q in range(m)]  # (a, n, n, cout)
        y = tf.stack([combo((at[p, i], c[i]) for i in range(a)) for p in range(m) for c in cols])
    else:
        y = tf.einsum("ps,snc->pnc", tf.constant(np.kron(at, at), tf.float32), mm)
    y = tf.reshape(y, (m, m, n, n, cout))  # [p, q, ti, tj, c]
    y = tf.reshape(tf.transpose(y, (2, 0, 3, 1, 4)), (1, n * m, n * m, cout))
    return y + bias


def forward(name, x, k, bias):
    if name == "direct":
        return tf.nn.conv2d(x, k, 1, "VALID") + bias
    spec = F2 if name.startswith("wino2") else F4
    return winograd(x, k, bias, spec, name.split("-")[1])


def make_step(name, jit):
    @tf.function(jit_compile=jit)
    def step(x, k, bias, up):
        with tf.GradientTape() as tape:
            tape.watch([x, k, bias])
            loss = tf.reduce_sum(forward(name, x, k, bias) * up)
        return (loss, *tape.gradient(loss, [x, k, bias]))

    return step


def child(args) -> None:
    rng = np.random.default_rng(0)
    x, up = rng.standard_normal((1, H, H, C)), rng.standard_normal((1, OUT, OUT, C))
    k = rng.standard_normal((K, K, C, C)) * np.sqrt(2 / (K * K * C))
    bias = rng.standard_normal(C) * 0.1
    t32 = [tf.constant(a, tf.float32) for a in (x, k, bias, up)]
    x64, k64 = tf.constant(x), tf.constant(k)  # float64 truth: y, dx, dk of the plain conv
    with tf.GradientTape() as tape:
        tape.watch([x64, k64])
        y64 = tf.nn.conv2d(x64, k64, 1, "VALID") + bias
    truth = [y64.numpy(), *[g.numpy() for g in tape.gradient(y64, [x64, k64], up)]]
    fns, errs = {}, {}
    for name in args.variants.split(","):
        for jit in args.jit.split(","):
            fn = make_step(name, jit == "on")
            fwd = tf.function(lambda *a, name=name: forward(name, *a), jit_compile=jit == "on")
            got = (fwd(*t32[:3]), *fn(*t32)[1:3])  # y, dx, dk
            errs[f"{name}|{jit}"] = [float(np.abs(g.numpy() - t).max() / np.abs(t).max())
                                     for g, t in zip(got, truth, strict=True)]
            fns[f"{name}|{jit}"] = fn
            for _ in range(args.warmup):
                fn(*t32)[0].numpy()
    print("READY " + json.dumps(errs), flush=True)
    for line in sys.stdin:  # "<reps> key key ...": one round, in that order
        reps, *keys = line.split()
        times = {key: [] for key in keys}
        for key in (key for key in keys for _ in range(int(reps))):
            start = time.perf_counter()
            fns[key](*t32)[0].numpy()
            times[key].append(1e3 * (time.perf_counter() - start))
        print("TIMES " + json.dumps(times), flush=True)


class Child:  # a measuring sub-process in its own environment, driven round by round
    def __init__(self, env, jit, variants, warmup):
        self.name = " ".join(v.lstrip("-") if k == "XLA_FLAGS" else f"{k}={v}"
                             for k, v in env.items()) or "default"
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--jit", jit,
               "--variants", variants, "--warmup", str(warmup)]
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(cmd, env=dict(os.environ, **env), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.errs = self.read("READY") or {}

    def read(self, tag):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        self.log.seek(0)
        tail = (self.log.read().strip().splitlines() or ["no output"])[-1]
        print(f"{self.name}: failed (rc {self.proc.wait()}): {tail[-150:]}", flush=True)
        return None

    def round(self, keys, reps, r, into):
        keys = keys[r % len(keys):] + keys[:r % len(keys)]
        self.proc.stdin.write(f"{reps} {' '.join(keys)}\n")
        self.proc.stdin.flush()
        for key, ms in (self.read("TIMES") or {}).items():
            into.setdefault(key, []).extend(ms)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


def print_rows(name, times, versus=None):
    med = {key: statistics.median(ms) for key, ms in times.items()}
    for key, ms in med.items():
        variant, jit = key.split("|")
        line = (f"{name:<52} {variant:<8} {jit:<3} {ms:7.1f}"
                f" {ms / med.get('direct|' + jit, np.nan):6.2f} {GFLOP / ms * 1e3:7.1f}")
        if versus:  # the default environment's times in the same alternation
            line += f" {ms / statistics.median(versus[key]):6.2f}"
        print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--jit", default="on,off", help="XLA settings in the default environment")
    ap.add_argument("--variants", default=VARIANTS)
    for flag, n in ("rounds", 6), ("reps", 2), ("warmup", 1), ("env-rounds", 10), ("env-reps", 1):
        ap.add_argument(f"--{flag}", type=int, default=n)  # env-*: in the other environments
    ap.add_argument("--no-env", action="store_true", help="only the default environment")
    args = ap.parse_args()
    if args.child:
        return child(args)
    header = f"{'environment':<52} {'variant':<8} xla {'ms':>7} vs dir GFLOP/s vs def"
    print(f"conv 1x{H}x{H}x{C} -> 1x{OUT}x{OUT}x{C}, 3x3 valid + bias; fwd+bwd ="
          f" {GFLOP:.2f} GFLOP; {os.cpu_count()} CPUs\n{header}", flush=True)
    default, times = Child({}, args.jit, args.variants, args.warmup), {}
    if not default.errs:
        return
    for r in range(args.rounds):
        default.round(list(default.errs), args.reps, r, times)
    print_rows("default", times)
    print(f"{'error vs float64: max abs diff / max abs':<52} {'variant':<8} xla"
          f" {'y':>7} {'dx':>7} {'dk':>7}")
    for (variant, jit), err in ((key.split("|"), err) for key, err in default.errs.items()):
        print(f"{'':<52} {variant:<8} {jit:<3} " + " ".join(f"{e:7.1e}" for e in err))
    print("" if args.no_env else header)
    for env, jit, variants in [] if args.no_env else ENVS:
        other = Child(env, jit, variants, args.warmup)
        keys = [key for key in other.errs if key in default.errs]
        mine, ref = {}, {}
        for r in range(args.env_rounds if keys else 0):  # alternate with the default process
            other.round(keys, args.env_reps, r, mine)
            default.round(keys, args.env_reps, r, ref)
        other.close()
        print_rows(other.name, mine, ref)
    default.close()


if __name__ == "__main__":
    main()
