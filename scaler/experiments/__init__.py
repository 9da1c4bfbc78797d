"""Experiments: each plans a frame of networks, evaluates it through scaler.run, and returns frames and figures."""
