"""Pictures of what happens inside a model: attention, embeddings, tokens, training curves."""
