"""fastmnist: train a network to 99% on MNIST as fast as the hardware allows, and show where the time goes."""

__version__ = "0.1.0"
