"""`viscoin directions`: the related ways of finding concepts, beside VisCoIN's own.

`directions gan` learns interpretable directions in a generator's latent space without labels (a direction
matrix and a reconstructor that must tell, from an image pair, which direction moved and how far);
`directions classifier` finds encoding/decoding direction pairs in a classifier's activations. Each
subcommand lives in its own helper module and registers itself on `directions_app`.
"""

from __future__ import annotations

import typer

from viscoin_cli.cli.app import _Group, app

directions_app = typer.Typer(
    name="directions",
    cls=_Group,
    help="Unsupervised concept directions: in a generator's latent space (gan) or a classifier's activations "
    "(classifier).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(directions_app, name="directions", rich_help_panel="Interpret")

from viscoin_cli.cli import _directions_classifier, _directions_gan  # noqa: E402,F401  (register the subcommands)
