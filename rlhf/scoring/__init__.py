"""The rewards arrow: Rollouts -> Scored, through the reward layer (rewards/)."""
