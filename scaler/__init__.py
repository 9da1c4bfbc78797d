"""scaler: compound scaling of CNNs with FReLU and FLGC variants."""

__version__ = "0.1.0"
