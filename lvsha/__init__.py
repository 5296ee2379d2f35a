"""lvsha: a high-availability supervisor for Linux Virtual Server."""

__version__ = "0.1.0"
