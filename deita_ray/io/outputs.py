"""What a command may write and remove: outputs checked before use, and only the project's own files removed.

    check_output("out/", inputs=["pool/"])          # OutputError for /, ~, an input, a parent of an input
    clear_own_files("out/scored")                    # only files named the way deita_ray names its files
    clear_own_tree("out/checkpoints")                # a whole tree, only if deita_ray created it (its marker)

Rules every command follows (issue: "never delete what you did not make"):
- inputs are checked before anything is removed (the callers plan their reads first);
- an output that is `/`, the home directory (or above it), an input, or a directory holding an input is
  refused in one line; an input that is the project's own output under it (OUT/scored for `embed`) is not
  an input of the user's;
- `--overwrite` removes only files this project wrote, known by their names (parts, quarantine parts,
  vector shards, temporaries: names made of hashes that no person types) or listed by the caller
  (selected.parquet, ...), or whole trees the project created and marked (Ray Train's checkpoints, a saved
  model); a directory is never removed because it is empty or named like ours.
"""

from __future__ import annotations

import os
import posixpath
import re
import time

from deita_ray.io import fs

# Written into a directory the project creates for a tree of files it does not name itself.
MARKER = "_deita_ray_tree.json"

# Names deita_ray gives the files it writes in bulk (io/writer.part_name, io/quarantine.part_for, embedding
# shards, the atomic writers' temporaries, the done-ids file).
OWN_FILE = re.compile(
    r"(?:part|read)-[0-9a-f]{12}-\d{5}\.parquet"
    r"|[a-z][a-z_-]*-(?:permanent|transient)-[0-9a-f]{16}\.parquet"
    r"|emb-[0-9a-f]{20}\.npy"
    r"|_.+\.[0-9a-f]{8}\.inprogress"
    r"|_[a-z_]+_done_ids\.parquet")


class OutputError(ValueError):
    """An output that must not be used (it would hold or overwrite something that is not ours)."""


def _normal(url: str) -> str:
    """A comparable form: absolute real path for local files, the URL without a trailing slash otherwise."""
    if "://" in url and not url.startswith("file://"):
        return url.rstrip("/")
    path = url[len("file://"):] if url.startswith("file://") else url
    return os.path.realpath(os.path.expanduser(path))


def _inside(child: str, parent: str) -> bool:
    """child == parent or child is below parent (both normalised)."""
    if child == parent:
        return True
    return child.startswith(parent.rstrip("/") + "/")


def check_output(output: str, inputs: list[str] = (), own: tuple[str, ...] = ()) -> None:
    """Refuse an output that is `/`, the home directory or above it, an input, or holds an input. `own`: names
    of directories directly under the output that the project writes (an input inside one of them is the
    project's own output, e.g. OUT/scored read by `embed -o OUT`)."""
    out = _normal(output)
    if "://" in out:
        if out.split("://", 1)[1].strip("/") == "":
            raise OutputError(f"refusing to write to {output}: name a directory inside it")
    elif _inside(_normal("~"), out):
        what = "the root directory" if out == "/" else "your home directory or a directory above it"
        raise OutputError(f"refusing to write to {output}: it is {what}; give an output directory of its own")
    for given in inputs:
        source = _normal(given)
        if source == out:
            raise OutputError(f"the output {output} is also an input; give an output directory of its own")
        if _inside(source, out):
            first = source[len(out):].lstrip("/").split("/", 1)[0]
            if first not in own:
                raise OutputError(f"the output {output} holds the input {given}; give an output directory that "
                                  f"holds no inputs")
        if _inside(out, source) and _is_dir(given):
            raise OutputError(f"the output {output} is inside the input directory {given}: a later read of it "
                              f"would take this command's own files for input; put the output elsewhere")


def _is_dir(url: str) -> bool:
    filesystem, path = fs.url_to_fs(url)
    try:
        return filesystem.isdir(path)
    except OSError:
        return False


def clear_own_files(directory: str, names: tuple[str, ...] = ()) -> int:
    """Remove, under `directory` (recursively), the files named the way deita_ray names its bulk files, plus
    the files `names` (relative paths) the caller writes. Everything else stays. Returns files removed."""
    filesystem, path = fs.url_to_fs(directory)
    if not filesystem.exists(path):
        return 0
    if not filesystem.isdir(path):
        raise OutputError(f"{directory} is a file where deita_ray keeps a directory; move it away first")
    wanted = {posixpath.join(path, n) for n in names}
    doomed = [p for p in filesystem.find(path) if OWN_FILE.fullmatch(posixpath.basename(p)) or p in wanted]
    for p in doomed:
        filesystem.rm_file(p)
    return len(doomed)


def mark_tree(directory: str) -> None:
    """Create `directory` as the project's own tree (only if it does not exist yet: a directory someone else
    made is never marked)."""
    filesystem, path = fs.url_to_fs(directory)
    if filesystem.exists(path) and not filesystem.exists(posixpath.join(path, MARKER)):
        raise OutputError(f"{directory} exists and was not made by deita-ray; move it away or choose another output")
    fs.write_json(posixpath.join(directory, MARKER), {"written_by": "deita-ray", "since": time.time()})


def owns_tree(directory: str) -> bool:
    return fs.exists(posixpath.join(directory, MARKER))


def clear_own_tree(directory: str) -> None:
    """Remove a whole tree the project created (it carries the marker); refuse one it did not create."""
    filesystem, path = fs.url_to_fs(directory)
    if not filesystem.exists(path):
        return
    if not owns_tree(directory):
        raise OutputError(f"{directory} was not made by deita-ray (no {MARKER} in it); move it away or choose "
                          "another output")
    filesystem.rm(path, recursive=True)


def check_replaceable(directory: str, names: tuple[str, ...], marker: str) -> None:
    """Before a tool writes fixed file names into a local directory: refuse when one of them is there and the
    directory does not carry the tool's own record `marker` (someone else's file of that name)."""
    check_output(directory)
    if os.path.exists(os.path.join(directory, marker)):
        return
    taken = [n for n in names if os.path.exists(os.path.join(directory, n))]
    if taken:
        raise OutputError(f"{os.path.join(directory, taken[0])} exists and was not written by deita-ray; choose an "
                          "empty directory")
