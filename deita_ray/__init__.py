"""deita_ray: Deita data selection on Ray. See README.md; the CLI is `deita-ray --help`."""
__version__ = "0.1.0"
