"""`viscoin serve`: a local interactive explorer of a model, in the browser."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import RUNTIME, Run, grouped
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.shipped import DEFAULT_MODEL

SERVER = "Server"


@app.command("serve", rich_help_panel="Interpret")
@grouped
def serve(
    model_path: o.Model = DEFAULT_MODEL,
    port: Annotated[
        int,
        typer.Option(
            "--port", help="Port to listen on (0: any free port; the URL is printed).", rich_help_panel=SERVER
        ),
    ] = 8765,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Anything but a loopback address lets other machines use the explorer.",
            rich_help_panel=SERVER,
        ),
    ] = "127.0.0.1",
    top_k: Annotated[int, typer.Option("--top-k", help="Concepts shown with heatmaps and a λ slider.")] = 6,
    inputs: common.Inputs = common.INPUTS,
    run: Run = RUNTIME,
) -> None:
    """A local interactive explorer: pick a test image or upload one, see g's and f's predictions, the top
    concepts by local relevance with their heatmaps, and move a λ slider per concept (0 removes it, 4
    quadruples it) to see the render x̃′ = G(λ·Φ, γ) and g's prediction on it change live.

    The page and its assets are served by the package (no external URLs); the server listens on
    127.0.0.1 unless --host says otherwise and reads no file but the model, its parents and its dataset.
    Without a test split (the dataset's folder is not where the model records it and --data-root is not
    given) it explains uploads only. Stop it with Ctrl-C.

    Example: viscoin serve --port 8765 --top-k 8
    """
    from viscoin_cli.console import print_json

    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: expected 0..65535 (0: any free port)")
    common.check_positive(top_k, "--top-k")
    facts = common.read_model(model_path)
    server = _bind(host, port)
    try:
        explorer = _explorer(facts, inputs, run, top_k)
    except BaseException:
        server.server_close()
        raise
    server.explorer = explorer
    from viscoin_cli.serve.server import is_loopback

    if not is_loopback(host):
        sys.stderr.write(
            f"warning: listening on {host}: anyone who can reach this machine on port {server.server_port} can "
            "use the explorer\n"
        )
    if run.json_out:
        print_json({"url": server.url, "model": str(facts.path), "top_k": explorer.top_k})
    else:
        print(f"VisCoIN explorer of {facts.path.name}: {server.url} (Ctrl-C to stop)", flush=True)
    previous = _stop_on_signals()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        # Ctrl-C: nothing is left to save, so leave at once. A normal interpreter exit after torch ran in the
        # handler threads can abort in C++ ("terminate called without an active exception") or hang in a
        # thread pool's teardown (seen under load), which would turn a clean stop into a crash.
        server.server_close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    finally:
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_on_signals() -> dict[int, Any]:
    """Ctrl-C (SIGINT) and SIGTERM stop the server as KeyboardInterrupt, whatever this process inherited: a
    command started in the background of a script inherits SIGINT *ignored*, and Python then never raises
    KeyboardInterrupt. Returns the previous handlers, to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (an in-process caller on another thread)

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    return {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}


def _bind(host: str, port: int):
    """The server, bound before the model loads: a busy port or a bad --host fails at once, in one line."""
    import errno
    import socket

    from viscoin_cli.serve.server import make_server

    if not host.strip() or any(c.isspace() or c in "/?#@" for c in host):
        raise UserError(f"--host {host!r}: expected an address or a host name, e.g. 127.0.0.1")
    try:
        return make_server(None, host, port, log_errors=True)
    except socket.gaierror as err:
        raise UserError(f"--host {host}: cannot resolve it ({err.strerror})") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: already in use on {host} (pass another, or 0 for any free port)") from None
        raise UserError(f"--host {host} --port {port}: cannot listen ({err.strerror or err})") from None


def _explorer(facts: common.ModelFacts, inputs: common.Inputs, run: Run, top_k: int):
    """The model on its runtime with its test split. A test split that is not where the model records it is
    only a warning (uploads still work) unless --data-root named it."""
    from viscoin_cli.runtime import setup_runtime
    from viscoin_cli.serve.explorer import Explorer

    test_set = None
    try:
        test_set = common.load_test_split(facts, inputs)
    except UserError as err:
        if inputs.data_root is not None:
            raise
        sys.stderr.write(f"warning: no test split ({err}): the explorer explains uploads only\n")
    rt = setup_runtime(device=run.device, precision=run.precision)
    model = common.load_model(facts, rt, inputs)
    return Explorer(
        model,
        rt,
        facts.class_names,
        test_set,
        top_k,
        resolution=facts.resolution,
        channels=int(facts.dataset.get("channels", 3)),
        model_name=facts.path.name,
        dataset_name=str(facts.dataset["name"]),
    )
