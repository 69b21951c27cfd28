"""`hebbian plot`: a PNG of what a model learned, from a server or a `.keras` file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_plot_command(commands: Any, client: argparse.ArgumentParser) -> None:
    """Add `plot` to the `hebbian` parser."""
    from service.cli_models import add_model_option

    plot = commands.add_parser(
        "plot", parents=[client], help="draw a model's receptive fields, lateral weights "
        "and weight norms to a PNG",
        description="Draw a model (a served one, or a .keras file with --from): each unit's "
        "receptive field (as an image when the input is one), the lateral weights, the "
        "weight norms and, for a served model, the layer statistics the server tracks "
        "(explained variance, orthonormality error). A served model's weights are read "
        "with GetModelState, which writes nothing. Needs the plot extra (matplotlib).",
    )
    add_model_option(plot, positional=True)
    plot.add_argument("--out", type=Path, required=True, help="the image to write (.png)")
    plot.add_argument(
        "--from", dest="source_file", type=Path, metavar="FILE.keras",
        help="plot this .keras file instead of a served model (no server needed)",
    )
    plot.add_argument(
        "--image-shape", type=image_shape, metavar="HxW",
        help="draw receptive fields as HxW images (default: inferred when the input "
        "width is a square; 0 draws kernels as matrices)",
    )


def image_shape(text: str) -> tuple[int, ...]:
    """'8x8' -> (8, 8); '0' -> () (no images)."""
    if text.strip() == "0":
        return ()
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 8x8; got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes; got {text!r}")
    return (height, width)


def run_plot_file(args: argparse.Namespace) -> int:
    """`plot --from FILE.keras`: no server; a bad file is one line on stderr, exit 1."""
    if not args.source_file.is_file():
        print(f"hebbian: {args.source_file}: no such file", file=sys.stderr)
        return 1
    try:
        return run_plot(None, args)
    except (OSError, ValueError, TypeError) as error:  # not a .keras file of Hebbian layers
        print(f"hebbian: {args.source_file}: {error}", file=sys.stderr)
        return 1


def run_plot(client: Any, args: argparse.Namespace) -> int:
    """Draw the model to `args.out`; `client` is None with --from."""
    from service.plot import plot_model

    if args.source_file is not None:
        source, stats = args.source_file, None
        title, step = str(args.source_file), None
    else:
        from service.cli_data import served_stack

        model, state, source = served_stack(client, args.model)
        stats = {
            "explained variance": [s.explained_variance for s in model.layer_stats],
            "orthonormality error": [s.orthonormality_error for s in model.layer_stats],
        } if model.layer_stats else None
        step = state.step
        title = f"model {model.name}: step {step}, {model.samples_skipped} sample(s) refused"
    figure = plot_model(source, args.image_shape, stats=stats, title=title)
    figure.savefig(args.out, dpi=80)
    if args.json:
        print(json.dumps({"path": str(args.out), "step": step}))
    else:
        print(f"{title}: written to {args.out}")
    return 0
