"""kobako (小箱, "little box"): a Docker-compatible container engine in Python."""

__version__ = "0.1.0"
