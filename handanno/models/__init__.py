"""Models: the hand model layer and the learnable networks."""
