"""Memory plan: how much device memory a training step needs, before training (docs/PLAN.md)."""
