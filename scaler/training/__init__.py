"""Training: data, augmentation and the one training loop."""
