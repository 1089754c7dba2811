"""The recipe: `deita-ray run CONFIG`, every step of the registry as one job (config.py, pipeline.py)."""
