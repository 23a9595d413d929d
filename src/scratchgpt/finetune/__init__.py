"""Fine-tuning: a pretrained GPT taught a new task by the same Trainer (Stage 3).

:mod:`.init_from` picks the model to start from; :mod:`.classification` teaches it to sort
texts into classes (a spam filter, chapter 6 of the book).
"""
