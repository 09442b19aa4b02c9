"""Measures the score error of int8 schemes against fp32 on face-like vectors.

Decides the int8 scheme of facecore's index: one scale per vector versus one fixed scale for unit
vectors (clip at c / sqrt(d)). Run: .venv/bin/python tools/quant_error.py
"""

from __future__ import annotations

import numpy as np


def face_like(n_id: int, per: int, d: int, rng: np.random.Generator) -> np.ndarray:
    c = rng.standard_normal((n_id, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = np.repeat(c, per, 0) + rng.standard_normal((n_id * per, d)).astype(np.float32) * np.float32(0.6 / np.sqrt(d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def per_vector(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.abs(v).max(1) / 127
    return np.rint(v / s[:, None]).astype(np.int8), s


def fixed(v: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    s = c / np.sqrt(v.shape[1]) / 127
    return np.clip(np.rint(v / s), -127, 127).astype(np.int8), np.full(len(v), s)


def main() -> None:
    rng = np.random.default_rng(0)
    print("| d | scheme | RMS score error | max score error | top-1 agreement |")
    print("|---|---|---|---|---|")
    for d in (128, 512):
        x = face_like(2000, 5, d, rng)
        q = x[::37][:300]
        ref = q.astype(np.float64) @ x.T.astype(np.float64)
        schemes = {"per-vector scale": per_vector}
        schemes.update({f"fixed, clip {c}/sqrt(d)": (lambda v, c=c: fixed(v, c)) for c in (3, 4, 5, 6)})
        for name, f in schemes.items():
            xi, xs = f(x)
            qi, qs = f(q)
            est = (qi.astype(np.int64) @ xi.T.astype(np.int64)) * qs[:, None] * xs[None, :]
            err = est - ref
            agree = (est.argmax(1) == ref.argmax(1)).mean()
            print(f"| {d} | {name} | {np.sqrt((err ** 2).mean()):.2e} | {np.abs(err).max():.2e} | {agree:.3f} |")
        h = q.astype(np.float16).astype(np.float64) @ x.astype(np.float16).astype(np.float64).T - ref
        print(f"| {d} | fp16 (reference) | {np.sqrt((h ** 2).mean()):.2e} | {np.abs(h).max():.2e} | |")


if __name__ == "__main__":
    main()
