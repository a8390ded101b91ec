"""Where the policy lives: policy workers, the placements that arrange them, and weight sync."""
