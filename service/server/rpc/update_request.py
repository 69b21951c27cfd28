"""`UpdateModel` (AIP-134 style): which settings of which layers a request changes.

The request carries a `Model` whose `config.layers` hold the new values and an
`update_mask` of paths ``config.layers.<field>`` naming the fields to change, for the
fields of `service.model.updates.UPDATABLE` (learning_rate, decay_steps,
lateral_learning_rate, bcm_threshold_rate). How layers are addressed:

- one entry in `config.layers`: its value goes to every layer;
- one entry per layer of the model: entry i is layer i's, and an entry that leaves a
  masked field unset keeps that layer's value (so ``[{}, {"learning_rate": 0.01}]``
  changes layer 1 only);
- without `update_mask`, the mask is every field set in `config.layers`.

Everything else is INVALID_ARGUMENT naming the field: a path outside
``config.layers.*`` or a layer field that shapes the state or the rule (units, rule,
lateral, connectivity, seed, ...), the ``*`` wildcard, another number of entries, a
masked field that no entry sets, and a value the layer would refuse (checked by the
model before anything is logged).
"""

from __future__ import annotations

from service.api import hebbian_pb2 as pb
from service.codec.configs import LAYER_FIELDS, wire_float
from service.errors import InvalidInputError
from service.model.updates import UPDATABLE, LayerChanges
from service.server.core.bounds import quote

PREFIX = "config.layers."


def layer_changes(request: pb.UpdateModelRequest, layers: int) -> LayerChanges:
    """The per-layer changes of `request` for a model of `layers` layers.

    Raises:
      InvalidInputError: naming the field.
    """
    entries = list(request.model.config.layers)
    paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
    if not paths:
        paths = _populated(request.model.config)
        if not paths:
            raise InvalidInputError(
                "UpdateModel changes nothing: set update_mask and the new values in "
                f"model.config.layers (updatable: {', '.join(UPDATABLE)})",
                "bad_update")
    fields = [_field(path) for path in paths]
    if len(entries) not in (1, layers):
        raise InvalidInputError(
            f"model.config.layers has {len(entries)} entries; give 1 (for every "
            f"layer) or {layers} (one per layer of the model)", "bad_update")
    changes: list[dict[str, float]] = [{} for _ in range(layers)]
    for field in dict.fromkeys(fields):
        set_by = [i for i, entry in enumerate(entries) if entry.HasField(field)]
        if not set_by:
            raise InvalidInputError(f"update_mask names {PREFIX}{field} but no entry of "
                          "model.config.layers sets it", "bad_update")
        for index in range(layers):
            entry = entries[0] if len(entries) == 1 else entries[index]
            if entry.HasField(field):
                changes[index][field] = wire_float(getattr(entry, field))
    return tuple(changes)


def _field(path: str) -> str:
    """The layer field a mask path names; INVALID_ARGUMENT for any it may not change."""
    if path == "*":
        raise InvalidInputError("update_mask '*' (replace everything) is not supported; name the "
                      f"fields, e.g. {PREFIX}learning_rate", "bad_update")
    field = path.removeprefix(PREFIX) if path.startswith(PREFIX) else None
    if field in UPDATABLE:
        return field
    if field in LAYER_FIELDS or path in ("config", "config.layers", "config.input_dim",
                                          "config.engine", "name"):
        raise InvalidInputError(
            f"field {quote(path)} cannot be updated: only the learning-rate and "
            f"schedule settings can ({', '.join(PREFIX + f for f in UPDATABLE)}); "
            "create a new model to change the architecture, rule, lateral mode, "
            "connectivity or seed", "bad_update")
    raise InvalidInputError(f"update_mask path {quote(path)} is not a field of Model; updatable: "
                  f"{', '.join(PREFIX + f for f in UPDATABLE)}", "bad_update")


def _populated(config: pb.ModelConfig) -> list[str]:
    """The implied mask of a request without one: every field the config sets."""
    paths = []
    if config.input_dim:
        paths.append("config.input_dim")
    if config.engine:
        paths.append("config.engine")
    for entry in config.layers:
        for descriptor, _ in entry.ListFields():
            path = PREFIX + descriptor.name
            if path not in paths:
                paths.append(path)
    return paths
