"""`hebbian models list|create|get|update|delete`, and how every command names its model.

Every command that talks about one model takes `-m/--model NAME` (empty or absent: the
server's default model). The commands that took the name as a positional argument
before (`models create|get|update|delete`, `reset`, `export`, `snapshot`, `snapshots`,
`restore`) still accept it there.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from service.cli_io import InputError

# `models update` flags: the settings UpdateModel may change (service.model.updates).
UPDATE_FLAGS = ("learning_rate", "decay_steps", "lateral_learning_rate", "bcm_threshold_rate")


def add_model_option(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    """-m/--model, and with `positional` the older optional positional MODEL as well."""
    parser.add_argument(
        "-m", "--model", metavar="MODEL", default=None,
        help="model name (default: the server's default model)",
    )
    if positional:
        parser.add_argument(
            "name", nargs="?", default=None, metavar="MODEL",
            help="the model, as -m MODEL (the older form, still accepted)",
        )


def model_name(args: argparse.Namespace) -> str:
    """The model a command names, by -m/--model or positionally ("" = the default model).

    Raises:
      InputError: two different names.
    """
    option, positional = getattr(args, "model", None), getattr(args, "name", None)
    if option is not None and positional is not None and option != positional:
        raise InputError(f"two model names: {positional!r} and -m {option!r}; give one")
    return option if option is not None else positional or ""


def record(message: Any) -> dict:
    """A protobuf message as JSON data, with the proto's field names (as grpcurl shows)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def add_models_command(commands: Any, client: argparse.ArgumentParser) -> None:
    """`models list|create|get|update|delete` on the `hebbian` parser (`client`: shared
    options)."""
    models = commands.add_parser("models",
                                 help="list, create, inspect, update and delete models")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[client], help="list the models")
    listing.add_argument(
        "--targets", metavar="HOST:PORT,...", default=None,
        help="list every shard's models, with each one's shard: the shards' addresses in "
        "ordinal order; {A..B} expands (e.g. 'hebbian-{0..2}.hebbian-headless:50051')",
    )
    create = actions.add_parser(
        "create", parents=[client], help="create a model",
        description="Create a model from a config file (JSON or YAML, the StackConfig form "
        '{"input_dim": 16, "layers": [{"units": 4, "rule": "sanger"}]}) or from '
        "--input-dim and one --layer per layer, or with --from from a weights file (.npz "
        "as `hebbian export` writes it, or .keras), state included. Prints the new model "
        "as JSON.",
    )
    add_model_option(create, positional=True)
    create.add_argument("--config", metavar="FILE", help="model config file, JSON or YAML")
    create.add_argument("--input-dim", type=int, help="width of the input samples")
    create.add_argument(
        "--layer", action="append", metavar="KEY=VALUE,...", default=[],
        help="one layer, e.g. units=4,rule=sanger,learning_rate=0.005 (repeat for a stack)",
    )
    create.add_argument(
        "--from", dest="source_file", metavar="FILE.npz|FILE.keras",
        help="create the model with the config and the full state of this file",
    )
    get = actions.add_parser("get", parents=[client], help="show one model as JSON")
    add_model_option(get, positional=True)
    update = actions.add_parser(
        "update", parents=[client], help="change a model's learning rates, keeping its state",
        description="Change learning-rate and schedule settings of a served model (UpdateModel"
        "); its learned state is kept, and the change is logged like every other. Without "
        "--layer-index every layer gets the new values. Prints the model as JSON.",
    )
    add_model_option(update, positional=True)
    for setting in UPDATE_FLAGS:
        update.add_argument(f"--{setting.replace('_', '-')}", dest=setting, type=float,
                            metavar="X")
    update.add_argument("--layer-index", type=int, metavar="I",
                        help="change layer I only (0 = the input layer)")
    delete = actions.add_parser("delete", parents=[client], help="delete a model")
    add_model_option(delete, positional=True)


def run_models(client: Any, args: argparse.Namespace) -> int:
    """Runs a `models` action against a server."""
    if args.models_command == "list":
        models = client.list_models()
        if args.json:
            print(json.dumps([record(model) for model in models], indent=2))
            return 0
        print(f"{'NAME':<24} {'STEP':>12}  {'SHAPE':<14} RULES")
        for model in models:
            widths = [model.config.input_dim, *(layer.units for layer in model.config.layers)]
            rules = ",".join(layer.rule or "oja" for layer in model.config.layers)
            name = model.name + (" *" if model.is_default else "")
            shape = "->".join(str(w) for w in widths)
            print(f"{name:<24} {model.step:>12}  {shape:<14} {rules}")
        return 0
    if args.models_command == "create":
        if not args.model:
            raise InputError("models create needs a name: models create -m NAME ...")
        if args.source_file:
            if args.config or args.input_dim is not None or args.layer:
                raise InputError("give either --from or --config/--input-dim/--layer")
            from service.cli_weights import read_weights

            config, state = read_weights(args.source_file)
            model = client.create_model(args.model, config, state=state)
        else:
            model = client.create_model(args.model, model_config(args))
        print(json.dumps(record(model), indent=2))
        return 0
    if args.models_command == "update":
        print(json.dumps(record(update_model(client, args)), indent=2))
        return 0
    if args.models_command == "get":
        print(json.dumps(record(client.get_model(args.model)), indent=2))
        return 0
    if args.models_command == "delete":
        if not args.model:
            raise InputError("models delete needs a name: models delete -m NAME")
        client.delete_model(args.model)
        if args.json:
            print(json.dumps({"name": args.model, "deleted": True}))
        else:
            print(f"model {args.model}: deleted")
        return 0
    raise AssertionError(args.models_command)


def update_model(client: Any, args: argparse.Namespace) -> Any:
    """`models update`: the flags given, for every layer or for --layer-index only."""
    settings = {key: getattr(args, key) for key in UPDATE_FLAGS if getattr(args, key) is not None}
    if not settings:
        raise InputError("models update needs at least one of "
                         + ", ".join(f"--{key.replace('_', '-')}" for key in UPDATE_FLAGS))
    if args.layer_index is None:
        return client.update_model(args.model, **settings)
    count = len(client.get_model(args.model).config.layers)
    if not 0 <= args.layer_index < count:
        raise InputError(f"--layer-index {args.layer_index}: the model has {count} layer(s) "
                         f"(0..{count - 1})")
    layers = [settings if index == args.layer_index else {} for index in range(count)]
    return client.update_model(args.model, layers=layers)


def model_config(args: argparse.Namespace) -> dict:
    """The config of `models create`: --config file, or --input-dim plus --layer flags."""
    if args.config:
        if args.input_dim is not None or args.layer:
            raise InputError("give either --config or --input-dim/--layer, not both")
        try:
            with open(args.config, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise InputError(f"cannot read {args.config}: {error.strerror}") from None
        import yaml  # JSON is YAML too

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputError(f"{args.config}: not valid JSON or YAML: {error}") from None
        if not isinstance(config, dict):
            raise InputError(f"{args.config}: expected a mapping with input_dim and layers")
        return config
    if args.input_dim is None or not args.layer:
        raise InputError("models create needs --config, or --input-dim and at least one --layer")
    return {"input_dim": args.input_dim, "layers": [parse_layer(text) for text in args.layer]}


def parse_layer(text: str) -> dict:
    """"units=4,rule=sanger,learning_rate=0.01" as a layer dict with typed values."""
    layer: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--layer {text!r}: expected KEY=VALUE items, got {item!r}")
        layer[key.strip()] = _scalar(value.strip())
    return layer


def _scalar(text: str) -> bool | int | float | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
