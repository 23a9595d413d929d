"""Training: one loop (:mod:`.trainer`) for pretraining and fine-tuning, with its schedule,
optimizers, checkpoints, records and multi-process support."""
