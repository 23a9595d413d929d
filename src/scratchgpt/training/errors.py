"""Errors of a training run that the user can fix (a bad checkpoint), not bugs.

They live apart from the code that raises them, which needs PyTorch, so that the command line
can catch them without importing it (``scratchgpt --help`` answers in a fraction of a second).
"""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, truncated, corrupted or mismatched)."""
