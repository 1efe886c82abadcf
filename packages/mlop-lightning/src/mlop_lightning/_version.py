"""The version of mlop-lightning, which hatchling reads for the wheel ([tool.hatch.version])."""

__version__ = "0.1.0"
