"""A whole run: the trainer, the controller that orders a step's arrows, checkpoints, run folders and
logs, the warm start, supervised fine-tuning and export."""
