"""Fine-tuning: a pretrained GPT taught a new task by the same Trainer (Stage 3).

:mod:`.config` holds the settings every fine-tuning shares and :mod:`.init_from` picks the
model to start from; :mod:`.classification` teaches it to sort texts into classes (a spam
filter, chapter 6 of the book) and :mod:`.instruction` to follow instructions (chapter 7).
"""
