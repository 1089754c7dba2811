"""What the report pages share: their style, and a matplotlib figure saved as a PNG through the filesystem layer."""

from __future__ import annotations

import io
import posixpath

from deita_ray.io import fs


# One look for every page (selection, generation, eval); `align` is the table cells' alignment.
def page_style(align: str = "left") -> str:
    return ("<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0}"
            f"td,th{{border:1px solid #ccc;padding:4px 10px;text-align:{align}}}img{{max-width:100%}}"
            "figure{margin:1.5em 0}</style>")


def save_figure(fig, directory: str, name: str) -> None:
    """A matplotlib figure as a PNG under `directory`, through the filesystem layer (local or object store)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    fs.write_bytes(posixpath.join(directory, name), buffer.getvalue())
