"""Models: loading a base model and its LoRA adapters, the critic, and per-token log-probs under them."""
