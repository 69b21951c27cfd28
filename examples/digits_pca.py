"""Stream scikit-learn's digits into a Hebbian server and compare what it learns with PCA.

    python examples/digits_pca.py --out digits.png              # starts a server of its own
    python examples/digits_pca.py --target 127.0.0.1:50051      # or uses a running one

The 8x8 digit images (1797 of them, shipped with scikit-learn) are centred and divided by
8 (||x||^2 <= 36, so a learning rate of 0.01 keeps eta ||x||^2 <= 0.36, well below 2), streamed in
batches into a `sanger` model (GHA: unit i -> the i-th principal component), and the
model's explained variance is polled from GetModel after every pass. The picture shows the
learned components above PCA's, with |cos| between each pair, and the learning curve.
Needs the plot extra (matplotlib) and scikit-learn.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from service.bench.procs import ServeProcess
from service.cli_data import served_stack
from service.client import HebbianClient


def main(argv: list[str] | None = None) -> int:
    """Run the example; prints |cos| per component and writes the picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="a running server (default: start one)")
    parser.add_argument("--out", type=Path, default=Path("digits.png"), help="the picture")
    parser.add_argument("--components", type=int, default=8, help="units = components")
    parser.add_argument("--passes", type=int, default=4, help="passes over the data")
    parser.add_argument("--samples", type=int, default=1797, help="digits used (max 1797)")
    parser.add_argument("--batch", type=int, default=64, help="samples per stream message")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--model", default="digits", help="the model to create")
    args = parser.parse_args(argv)

    images = load_digits().data[: args.samples]
    x = ((images - images.mean(axis=0)) / 8.0).astype(np.float32)
    if args.target:
        return run(args, args.target, x)
    with tempfile.TemporaryDirectory() as workdir, ServeProcess(Path(workdir), "digits") as server:
        return run(args, server.target, x)


def run(args: argparse.Namespace, target: str, x: np.ndarray) -> int:
    """Create the model on `target`, stream `x`, compare with PCA, draw."""
    config = {"input_dim": 64, "layers": [
        {"units": args.components, "rule": "sanger", "learning_rate": args.learning_rate,
         "seed": 0},
    ]}
    rng = np.random.default_rng(0)
    curve = []
    with HebbianClient(target) as client:
        if args.model in {m.name for m in client.list_models()}:
            client.delete_model(args.model)
        client.create_model(args.model, config)
        for _ in range(args.passes):
            order = rng.permutation(len(x))
            batches = (x[order[i: i + args.batch]] for i in range(0, len(x), args.batch))
            for _ in client.stream_full(batches, model=args.model):
                pass
            curve.append(client.get_model(args.model).layer_stats[0].explained_variance)
        model, _, stack = served_stack(client, args.model)
    learned = stack.layer_states()[0].kernel.T  # one row per unit
    pca = PCA(args.components).fit(x).components_
    cosines = np.abs(np.sum(learned * pca, axis=1)) / np.linalg.norm(learned, axis=1)
    print(f"model {model.name}: step {model.step}, explained variance per pass "
          + ", ".join(f"{v:.3f}" for v in curve))
    print("|cos| with PCA's components: " + " ".join(f"{c:.3f}" for c in cosines))
    draw(learned, pca, cosines, curve).savefig(args.out, dpi=80)
    print(f"written to {args.out}")
    return 0


def draw(learned: np.ndarray, pca: np.ndarray, cosines: np.ndarray, curve: list[float]):
    """Learned components (top row) above PCA's (middle row), and the learning curve."""
    from matplotlib.figure import Figure

    k = len(learned)
    fig = Figure(figsize=(1.6 * k + 1, 6), layout="constrained")
    grid = fig.add_gridspec(3, k)
    for i in range(k):
        sign = np.sign(np.dot(learned[i], pca[i])) or 1.0  # a component's sign is arbitrary
        pair = ((sign * learned[i], f"GHA {i}\n|cos| {cosines[i]:.2f}"), (pca[i], f"PCA {i}"))
        for row, (vector, label) in enumerate(pair):
            ax = fig.add_subplot(grid[row, i])
            bound = np.abs(vector).max() or 1.0
            ax.imshow(vector.reshape(8, 8), cmap="RdBu_r", vmin=-bound, vmax=bound)
            ax.set_title(label, fontsize=9)
            ax.set_axis_off()
    ax = fig.add_subplot(grid[2, :])
    ax.plot(np.arange(1, len(curve) + 1), curve, marker="o")
    ax.set_xticks(np.arange(1, len(curve) + 1))
    ax.set_xlabel("pass over the digits")
    ax.set_ylabel("explained variance")
    return fig


if __name__ == "__main__":
    sys.exit(main())
