"""What both reports share: a matplotlib figure saved as a PNG through the filesystem layer."""

from __future__ import annotations

import io
import posixpath

from deita_ray.io import fs


def save_figure(fig, directory: str, name: str) -> None:
    """A matplotlib figure as a PNG under `directory`, through the filesystem layer (local or object store)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    fs.write_bytes(posixpath.join(directory, name), buffer.getvalue())
