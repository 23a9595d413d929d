"""Serving a model to many clients at once: the continuous-batching engine and the HTTP API."""
