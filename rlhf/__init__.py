"""effirl.rlhf: the RL machinery (models, rollout, algorithms, learner, weight sync, controller, CLI)."""
