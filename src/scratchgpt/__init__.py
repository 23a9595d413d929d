"""scratchgpt: build a GPT-style language model from scratch.

Stage 1 (building blocks): :mod:`scratchgpt.tokenizers`, :mod:`scratchgpt.data`,
:mod:`scratchgpt.model`, :mod:`scratchgpt.generation`.
"""

__version__ = "0.1.0"
