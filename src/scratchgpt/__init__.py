"""scratchgpt: build a GPT-style language model from scratch.

The package is built in floors; a module imports only from its own floor or those below it
(``tests/test_floors.py`` checks this):

1. foundations: :mod:`~scratchgpt.settings`, :mod:`~scratchgpt.config_files`,
   :mod:`~scratchgpt.config` (model shapes), :mod:`~scratchgpt.progress`,
   :mod:`~scratchgpt.lazy_exports` (a package's names imported on first use);
2. building blocks (Stage 1): :mod:`scratchgpt.tokenizers`, :mod:`scratchgpt.model`,
   :mod:`scratchgpt.data`;
3. using a model: :mod:`scratchgpt.generation` (text out of a model),
   :mod:`scratchgpt.plots`;
4. training (Stage 2): :mod:`scratchgpt.training` (one loop for every job) and
   :mod:`scratchgpt.run_dir` (what a run leaves behind);
5. models from outside: :mod:`scratchgpt.hub` (downloads, GPT-2's weights, export);
6. applications (Stages 2 and 3): :mod:`scratchgpt.pretraining` (its settings in
   :mod:`scratchgpt.pretraining_config`), :mod:`scratchgpt.finetune`,
   :mod:`scratchgpt.classify`, :mod:`scratchgpt.chat`, :mod:`scratchgpt.serving`,
   :mod:`scratchgpt.evaluation`, :mod:`scratchgpt.viz`;
7. the command line: :mod:`scratchgpt.cli`, which only parses arguments and calls the rest.
"""

__version__ = "0.1.0"
