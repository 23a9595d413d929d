"""Loading what to serve, and running the server with uvicorn (``scratchgpt serve``)."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

import torch
import uvicorn

from scratchgpt.classify import Classifier
from scratchgpt.config_files import load_toml
from scratchgpt.data.prompt_format import describe
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.hub.models import load_model, model_prompt_format, model_stop_ids, resolve_model
from scratchgpt.run_dir import CONFIG_FILE, HEAD, is_run_dir, model_tables
from scratchgpt.serving.app import ServedModel, ServeSettings, create_app


def load_served(spec: str, dtype: str = "auto") -> ServedModel:
    """The model ``spec`` names (a run directory, a downloaded GPT-2 or a Hugging Face model
    directory), named for clients by its directory's name. A classifier run serves
    ``/v1/classify``; a language model serves the completion routes, in its prompt format (a
    run's prompt style, a model directory's own chat template; alpaca for a base model, with a
    warning), stopping at any of its end-of-turn ids. ``dtype``: see
    :func:`~scratchgpt.hub.models.load_model`."""
    directory = resolve_model(spec)
    name = Path(spec).name if Path(spec).exists() else spec
    if is_run_dir(directory):
        head = model_tables(load_toml(directory / CONFIG_FILE))[HEAD]
        if head.get("kind") == "classifier":
            classifier = Classifier.from_run(directory)
            return ServedModel(name, classifier.tokenizer, classifier=classifier)
    prompt_format = model_prompt_format(spec)
    if prompt_format is None:
        print(f"warning: {spec} was never instruction-tuned: chat prompts are in the alpaca "
              "style, and a base model continues text rather than answering", file=sys.stderr)
    model, tokenizer = load_model(spec, dtype)
    return ServedModel(name, tokenizer, language_model=model,
                       style=prompt_format or get_prompt_style("alpaca"),
                       stop_ids=model_stop_ids(spec, tokenizer))


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does, and stopped by SIGINT (Ctrl-C)
    or SIGTERM as a finished program: uvicorn shuts down gracefully on either (the requests in
    flight are answered), then raises the signal again under the handlers it found, so that
    the process dies of it (exit 143 for SIGTERM); :meth:`stop` is those handlers, so ``serve``
    returns instead."""

    def __init__(self, config: uvicorn.Config, announcement: str) -> None:
        super().__init__(config)
        self.announcement = announcement

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.announcement, flush=True)

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Shut down (a signal before uvicorn's own handlers are in place stops it too)."""
        self.should_exit = True

    def run_until_stopped(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.run()  # signals reach the main thread only; whoever started this stops it
            return
        stopping = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, self.stop) for signum in stopping}
        try:
            self.run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def serve(spec: str, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          threads: int | None = None, dtype: str = "auto") -> None:
    """Serve ``spec`` until Ctrl-C or SIGTERM: prints the URL once the server is listening,
    and ``stopped serving NAME`` (on stderr) once it has shut down. ``threads``: the CPU threads
    one decoding step uses (``torch.set_num_threads``; None: PyTorch's default); ``dtype``
    the weights' (:func:`load_served`)."""
    if threads is not None:
        torch.set_num_threads(threads)
    served = load_served(spec, dtype)
    app = create_app(served, settings)
    kind = ("classifier" if served.classifier
            else describe(served.style) if served.style else "no prompt format")
    _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"),
            f"serving {served.name} ({kind}) at http://{host}:{port} (Ctrl-C stops)"
            ).run_until_stopped()
    print(f"stopped serving {served.name}", file=sys.stderr, flush=True)
