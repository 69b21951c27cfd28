"""Hyper-parameter updates of a built model: which settings may change, and the new config.

A model's learning-rate and schedule settings may change while it keeps its learned
state (`HebbianStack.update`); everything that shapes the state or the rule does not.
An update is one mapping per layer, input layer first, of the settings it changes
(an empty mapping leaves that layer as it is): ``({"learning_rate": 0.01}, {})``.

The schedule position stays where it is: after an update of `learning_rate` to eta0' at
step t, the rate is eta0' / (1 + t / decay_steps), as if eta0' had been the rate from
the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

UPDATABLE = ("learning_rate", "decay_steps", "lateral_learning_rate", "bcm_threshold_rate")

LayerChanges = tuple[dict[str, float], ...]


class UpdateError(ValueError):
    """An update that cannot apply (the message names the layer and the setting)."""


def check_changes(layers: int, changes: Sequence[Mapping]) -> LayerChanges:
    """`changes` as one dict of float settings per layer, the keys checked (not the values).

    Raises:
      UpdateError: the wrong number of layers, or a setting that may not change.
    """
    if len(changes) != layers:
        raise UpdateError(f"an update needs one entry per layer ({layers}); got {len(changes)}")
    checked = []
    for index, layer in enumerate(changes):
        for key in layer:
            if key not in UPDATABLE:
                raise UpdateError(
                    f"layer {index}: {key!r} cannot be updated (only {', '.join(UPDATABLE)}; "
                    "create a new model to change anything else)"
                )
        checked.append({key: float(value) for key, value in layer.items()})
    return tuple(checked)


def updated_layers(layers: Sequence[Mapping], changes: Sequence[Mapping]) -> tuple[dict, ...]:
    """The layer configs `layers` with `changes` applied (keys checked, values not)."""
    changes = check_changes(len(layers), changes)
    return tuple({**layer, **change} for layer, change in zip(layers, changes, strict=True))

