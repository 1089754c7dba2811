"""The reports a person opens in a browser: the selection (report/selection.py) and the generation half's
evolution and judging (report/generation.py), side by side under `<output>/report/`."""
