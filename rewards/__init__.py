"""effirl.rewards: tasks, datasets, reward shaping and the reward service. Uses sandbox/, never torch."""
