"""fastmnist's version, in a module of its own: whatever records it imports nothing above it."""

__version__ = "0.3.0"
