"""Interoperability with other model hubs (Hugging Face GPT-2 weights and configs)."""
