"""Training loops (pretraining, fine-tuning, LM), checkpoints, schedules, distributed helpers."""
