"""Loading what to serve, and running the server with uvicorn (``scratchgpt serve``)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import uvicorn

from scratchgpt.classify import Classifier
from scratchgpt.config_files import load_toml
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.hub.gpt2 import load_gpt2, model_prompt_style, resolve_model
from scratchgpt.run_dir import CONFIG_FILE, HEAD, is_run_dir, model_tables
from scratchgpt.serving.app import ServedModel, ServeSettings, create_app


def load_served(spec: str) -> ServedModel:
    """The model ``spec`` names (a run directory or a downloaded GPT-2), named for clients by
    its directory's name. A classifier run serves ``/v1/classify``; a language model serves
    the completion routes, in its prompt style (alpaca for a base model, with a warning)."""
    directory = resolve_model(spec)
    name = Path(spec).name if Path(spec).exists() else spec
    if is_run_dir(directory):
        head = model_tables(load_toml(directory / CONFIG_FILE))[HEAD]
        if head.get("kind") == "classifier":
            classifier = Classifier.from_run(directory)
            return ServedModel(name, classifier.tokenizer, classifier=classifier)
    style = model_prompt_style(spec)
    if style is None:
        print(f"warning: {spec} was never instruction-tuned: chat prompts are in the alpaca "
              "style, and a base model continues text rather than answering", file=sys.stderr)
    model, tokenizer = load_gpt2(spec)
    return ServedModel(name, tokenizer, language_model=model,
                       style=get_prompt_style(style or "alpaca"))


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does."""

    def __init__(self, config: uvicorn.Config, announcement: str) -> None:
        super().__init__(config)
        self.announcement = announcement

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.announcement, flush=True)


def serve(spec: str, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``spec`` until Ctrl-C; prints the URL once the server is listening."""
    served = load_served(spec)
    app = create_app(served, settings)
    kind = ("classifier" if served.classifier
            else f"prompt style {served.style.name if served.style else 'none'}")
    _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"),
            f"serving {served.name} ({kind}) at http://{host}:{port} (Ctrl-C stops)").run()
