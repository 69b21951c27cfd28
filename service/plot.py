"""Pictures of what a Hebbian model learned, for notebooks and `hebbian plot`.

matplotlib is imported here only, and only when a function is called (the `plot` extra:
``pip install 'hebbian-service[plot]'``). Figures are made without pyplot, so they render
on machines without a display and show in notebooks as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.model.layer_state import HebbianState


def plot_model(
    source: Any,
    image_shape: tuple[int, int] | None = None,
    *,
    stats: Mapping[str, Sequence[float]] | None = None,
    curves: Mapping[str, Sequence[float]] | None = None,
    title: str | None = None,
    max_units: int = 64,
):
    """A figure of a model: receptive fields, lateral weights and weight norms per layer.

    Args:
      source: a `HebbianStack`, a Keras model with `Hebbian` layers, a `.keras` path, or a
        sequence of `HebbianState` (numpy arrays), input layer first.
      image_shape: (height, width) of one input sample; each unit's receptive field is
        then drawn as an image (for deeper layers the linear composite of the kernels
        below it). None: inferred when the input width is a square; () draws kernels as
        matrices instead.
      stats: per-layer figures to show as bars, e.g. GetModel's ``explained_variance`` and
        ``orthonormality_error`` (one value per layer).
      curves: learning curves, name -> values over time (e.g. explained variance polled
        while streaming).
      title: the figure's title.
      max_units: draw at most this many units' receptive fields per layer.

    Returns:
      a `matplotlib.figure.Figure`; `fig.savefig("model.png")` writes it.
    """
    from matplotlib.figure import Figure

    states = layer_states(source)
    if image_shape is None:
        side = math.isqrt(states[0].kernel.shape[0])
        image_shape = (side, side) if side > 1 and side * side == states[0].kernel.shape[0] \
            else ()
    extra_rows = int(bool(stats)) + int(bool(curves))
    rows = len(states) + extra_rows
    fig = Figure(figsize=(13, 3.6 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 3, width_ratios=(2.2, 1, 1))
    composite = None
    for index, state in enumerate(states):
        kernel = np.asarray(state.kernel, np.float32)
        composite = kernel if composite is None else composite @ kernel
        _receptive_fields(fig.add_subplot(grid[index, 0]), index, kernel, composite,
                          image_shape, max_units)
        _matrix(fig.add_subplot(grid[index, 1]), np.asarray(state.lateral, np.float32),
                f"layer {index}: lateral weights (units x units)")
        norms = np.linalg.norm(kernel, axis=0)
        ax = fig.add_subplot(grid[index, 2])
        ax.bar(np.arange(norms.size), norms, color="tab:blue")
        ax.set_title(f"layer {index}: weight norms (step {int(state.step)})")
        ax.set_xlabel("unit")
    row = len(states)
    if stats:
        ax = fig.add_subplot(grid[row, :])
        _bars(ax, stats)
        row += 1
    if curves:
        ax = fig.add_subplot(grid[row, :])
        for name, values in curves.items():
            ax.plot(np.arange(len(values)), np.asarray(values, float), marker=".", label=name)
        ax.set_title("learning curves")
        ax.set_xlabel("poll")
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def layer_states(source: Any) -> list[HebbianState]:
    """Every layer's state as numpy arrays, from any `plot_model` source."""
    if isinstance(source, str | Path):
        import keras

        import service.model.keras_model  # noqa: F401  (registers the classes to load)

        source = keras.saving.load_model(source)
    if hasattr(source, "layer_states"):  # a HebbianStack
        return list(source.layer_states())
    if hasattr(source, "layers"):  # a Keras model
        layers = [layer for layer in source.layers if hasattr(layer, "state_variables")]
        if not layers:
            raise ValueError(f"{source.name!r} has no Hebbian layers to plot")
        return [HebbianState(*(np.asarray(v.numpy()) for v in layer.state_variables))
                for layer in layers]
    states = [HebbianState(*state) for state in source]
    if not states:
        raise ValueError("nothing to plot: no layers")
    return states


def _receptive_fields(ax, index, kernel, composite, image_shape, max_units) -> None:
    units = min(kernel.shape[1], max_units)
    if not image_shape:
        _matrix(ax, kernel[:, :units], f"layer {index}: kernel (inputs x units)")
        return
    height, width = image_shape
    if height * width != composite.shape[0]:
        raise ValueError(
            f"image_shape {height}x{width} has {height * width} pixels; the input width is "
            f"{composite.shape[0]}"
        )
    columns = math.ceil(math.sqrt(units))
    grid_rows = math.ceil(units / columns)
    mosaic = np.full((grid_rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for unit in range(units):
        field = composite[:, unit].reshape(height, width)
        scale = np.abs(field).max() or 1.0
        r, c = divmod(unit, columns)
        mosaic[r * (height + 1): r * (height + 1) + height,
               c * (width + 1): c * (width + 1) + width] = field / scale
    ax.imshow(mosaic, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    what = "receptive fields" if index == 0 else "receptive fields (linear composite)"
    ax.set_title(f"layer {index}: {what}, {units} unit(s)")
    ax.set_axis_off()


def _matrix(ax, matrix, title) -> None:
    bound = float(np.abs(matrix).max()) or 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto",
                      interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title)


def _bars(ax, stats: Mapping[str, Sequence[float]]) -> None:
    names = list(stats)
    layers = max(len(values) for values in stats.values())
    width = 0.8 / max(len(names), 1)
    for offset, name in enumerate(names):
        values = np.asarray(stats[name], float)
        ax.bar(np.arange(values.size) + offset * width, values, width, label=name)
    ax.set_xticks(np.arange(layers) + width * (len(names) - 1) / 2,
                  [f"layer {i}" for i in range(layers)])
    ax.set_title("layer statistics (as the server reports them)")
    ax.legend()
