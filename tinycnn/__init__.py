"""tinycnn: a convolutional network library written from scratch, to read and to run."""

__version__ = "0.1.0"
