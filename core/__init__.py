"""The UniFL library: knows no host and no pocket world (ARCHITECTURE.md)."""

__version__ = "0.1.0"
