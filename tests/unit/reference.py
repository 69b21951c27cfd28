"""Independent numpy references: data with a known spectrum and per-sample rule loops.

Written from the textbook formulas with W = kernel^T (one row per unit), on purpose
sharing no code with `service.model`.
"""

from __future__ import annotations

import numpy as np

SPECTRUM = np.array([5, 3, 2, 1, 0.5, 0.3, 0.2, 0.1])


def gaussian_data(n: int = 20_000, seed: int = 0, spectrum=SPECTRUM):
    """Zero-mean Gaussian samples with covariance R diag(spectrum) R^T, R a random rotation.

    Returns (samples float32 (n, d), eigenvectors (d, d) as columns, descending eigenvalues).
    """
    rng = np.random.default_rng(seed)
    d = len(spectrum)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    samples = (rng.normal(size=(n, d)) * np.sqrt(spectrum)) @ rotation.T
    cov = np.cov(samples, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return samples.astype(np.float32), vectors[:, order], values[order]


def numpy_online(kernel, samples, rule, eta0=1e-3, tau=0.0, lateral=None, alpha0=0.0,
                 theta=None, theta_rate=0.01, norm_target=1.0):
    """Per-sample online learning in plain numpy; returns (W, L, theta, activations)."""
    W = np.array(kernel, np.float64).T.copy()
    units = W.shape[0]
    L = np.zeros((units, units)) if lateral is None else np.array(lateral, np.float64)
    theta = np.zeros(units) if theta is None else np.array(theta, np.float64)
    ys = []
    for t, x in enumerate(np.asarray(samples, np.float64)):
        scale = 1.0 + t / tau if tau else 1.0
        eta, alpha = eta0 / scale, alpha0 / scale
        h = W @ x
        y = h + L.T @ h  # y_row = h_row + h_row @ L
        ys.append(y)
        if rule == "oja":
            W = W + eta * (np.outer(y, x) - (y**2)[:, None] * W)
        elif rule == "oja_subspace":
            W = W + eta * (np.outer(y, x) - np.outer(y, y) @ W)
        elif rule == "sanger":
            W = W + eta * (np.outer(y, x) - np.tril(np.outer(y, y)) @ W)
        elif rule == "hebb":
            W = W + eta * np.outer(y, x)
            W = W * (norm_target / np.linalg.norm(W, axis=1, keepdims=True))
        elif rule == "bcm":
            W = W + eta * np.outer(y * (y - theta), x)
            theta = theta + theta_rate * (y**2 - theta)
        else:
            raise ValueError(rule)
        if alpha0:
            L = L - alpha * np.outer(y, y)
            np.fill_diagonal(L, 0.0)
    return W, L, theta, np.array(ys)


ACTIVATION_FUNCTIONS = {
    "linear": lambda h: h,
    "relu": lambda h: np.maximum(h, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda h: 1.0 / (1.0 + np.exp(-h)),
}


def numpy_layer_online(kernel, samples, rule, *, eta0=1e-3, tau=0.0, lateral=None, alpha0=0.0,
                       theta_rate=0.01, norm_target=1.0, stabilizer="normalize",
                       weight_bound=1.0, activation="linear", mask=None,
                       granularity="per_sample", call_size=None):
    """Every option of one layer, per sample (or one mean update per `call_size` samples
    for granularity "batch_mean"), in float64; returns (W, L, theta, activations).

    `lateral` is the initial lateral matrix (fixed unless `alpha0` > 0); `mask` the
    (input_dim, units) connectivity mask.
    """
    W = np.array(kernel, np.float64).T.copy()
    units = W.shape[0]
    L = np.zeros((units, units)) if lateral is None else np.array(lateral, np.float64)
    M = np.ones_like(W) if mask is None else np.array(mask, np.float64).T
    theta = np.zeros(units)
    f = ACTIVATION_FUNCTIONS[activation]
    samples = np.asarray(samples, np.float64)
    size = 1 if granularity == "per_sample" else (call_size or len(samples))
    ys, t = [], 0
    for start in range(0, len(samples), size):
        X = samples[start:start + size]
        scale = 1.0 + t / tau if tau else 1.0
        eta, alpha = eta0 / scale, alpha0 / scale
        Y = np.array([f(W @ x) for x in X])
        Y = Y + Y @ L
        ys.extend(Y)
        dW = np.zeros_like(W)
        for x, y in zip(X, Y, strict=True):
            if rule == "oja":
                dW += np.outer(y, x) - (y**2)[:, None] * W
            elif rule == "oja_subspace":
                dW += np.outer(y, x) - np.outer(y, y) @ W
            elif rule == "sanger":
                dW += np.outer(y, x) - np.tril(np.outer(y, y)) @ W
            elif rule in ("hebb", "bcm"):
                dW += np.outer(y * (y - theta) if rule == "bcm" else y, x)
        n = len(X)
        W = (W + eta * dW / n) * M
        if rule == "hebb" and stabilizer == "normalize":
            norms = np.linalg.norm(W, axis=1, keepdims=True)
            W = np.divide(norm_target * W, norms, out=np.zeros_like(W), where=norms != 0)
        elif rule == "hebb":
            W = np.clip(W, -weight_bound, weight_bound)
        if rule == "bcm":
            theta = theta + theta_rate * ((Y**2).mean(axis=0) - theta)
        if alpha0:
            L = L - alpha * (Y.T @ Y) / n
            np.fill_diagonal(L, 0.0)
        t += n
    return W, L, theta, np.array(ys)
