"""ResNet baselines and teachers (placeholder: filled in by the ResNet work)."""
