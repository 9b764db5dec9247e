"""Safe file I/O: atomic writes (temporary file in the same folder, fsync, rename), outputs
checked before any work (writable, not one of the command's inputs, suffix = format), and json
reading that names the file and what is wrong with it.

The one guard every subcommand calls on its output paths is :func:`check_output_file` (files)
or :func:`check_output_dir` (folders), with ``inputs=`` the command's input paths.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from drcl.utils.errors import DiskFullError, OutputOverInputError

PathLike = str | os.PathLike
# An input of a command: a path, or (label, path) to name it in the message ("--gt", ...).
Inputs = Mapping[str, PathLike | None] | Iterable[PathLike | None] | None


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; nothing half-written is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(err):  # "[Errno 28]" alone does not say which disk
            raise disk_full_error(path, err) from err
        raise
    return path


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, also when a library wrapped it (torch.save's RuntimeError
    "file write failed", which loses the errno)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, RuntimeError) and "write failed" in str(err)


def disk_full_error(path: PathLike, err: BaseException | None = None) -> DiskFullError:
    """A one-line error naming ``path`` and the free space left on its disk."""
    folder = Path(path).parent
    try:
        import shutil

        free = f" ({shutil.disk_usage(folder).free / 2**20:.0f} MiB free)"
    except OSError:
        free = ""
    why = "No space left on device" if isinstance(err, OSError) or err is None else str(err)
    return DiskFullError(
        f"{path}: cannot write: {why}{free}",
        hint=f"free space on the disk of {folder} (or write elsewhere) and run again",
    )


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        Path(tmp).write_text(text)

    return atomic_write(path, _write)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


# Magic bytes of the files a json or YAML path is most often confused with.
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed (gunzip it first)",
    b"PK\x03\x04": "a zip archive (unzip it first)",
    b"BZh": "bzip2-compressed (bunzip2 it first)",
    b"\xfd7zXZ": "xz-compressed (unxz it first)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (unzstd it first)",
    b"\xff\xfe": "UTF-16 text (save it as UTF-8)",
    b"\xfe\xff": "UTF-16 text (save it as UTF-8)",
}


def read_text_utf8(path: PathLike, what: str = "text") -> str:
    """The text of ``path`` as UTF-8 (a UTF-8 byte-order mark is allowed and dropped).

    Raises:
        ValueError: a folder, a compressed or UTF-16 file, or bytes that are not UTF-8, naming
            the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a {what} file")
    data = path.read_bytes()
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            raise ValueError(f"{path}: not a {what} file: {kind}")
    if b"\x00" in data[:1024]:  # UTF-16/32 without a byte-order mark, or a binary file
        raise ValueError(f"{path}: not a UTF-8 {what} file: NUL bytes (UTF-16, or binary)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a UTF-8 {what} file: byte {data[err.start]:#04x} at offset {err.start}"
        ) from err


def read_json(path: str | os.PathLike) -> Any:
    """Read json, turning a decode error into a message that names the file and position.

    Two json documents one after the other (``cat a.json b.json``) are refused as "extra data",
    with their position.
    """
    path = Path(path)
    text = read_text_utf8(path, "json")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` and prove it is writable (fails before training starts, not after)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"work dir {path} is not writable: {err.strerror or err}") from err
    return path


def _labelled(inputs: Inputs) -> list[tuple[str, str]]:
    """``[(label, path)]`` of ``inputs``; a glob (``dets_rank*.json``) stands for its matches."""
    if inputs is None:
        return []
    pairs = inputs.items() if isinstance(inputs, Mapping) else (("input", p) for p in inputs)
    out = []
    for label, p in pairs:
        if p is None or str(p) == "":
            continue
        p = os.fspath(p)
        matches = glob.glob(p) if glob.has_magic(p) and not os.path.exists(p) else [p]
        out += [(label, m) for m in matches]
    return out


def _same(a: str, b: str) -> bool:
    """Same file or folder: one inode (links and hard links), or one resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where they would resolve to
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(child: str, folder: str) -> bool:
    child, folder = os.path.realpath(child), os.path.realpath(folder)
    return os.path.commonpath([child, folder]) == folder


def refuse_overwriting_inputs(
    path: PathLike, inputs: Inputs, what: str = "--out", folder: bool = False
) -> None:
    """Refuse an output ``path`` that is one of ``inputs``: the same path, a symbolic link to
    it, or a hard link (same device and inode). A ``folder`` output (replaced as a whole) is
    also refused when an input lies inside it.

    Raises:
        OutputOverInputError: naming the option, the path and the input it would destroy.
    """
    for label, src in _labelled(inputs):
        if _same(os.fspath(path), src) or (folder and _inside(src, os.fspath(path))):
            how = "is" if _same(os.fspath(path), src) else "contains"
            raise OutputOverInputError(
                f"{what} {path} {how} the input {label} {src}; refusing to overwrite it",
                hint=f"give {what} a new path",
            )


def check_output_suffix(path: PathLike, suffixes: Iterable[str], what: str = "--out") -> None:
    """A suffix names a format: refuse one this output is not written in (``stats.txt`` for a
    PNG). No suffix at all is allowed (nothing is claimed)."""
    allowed = tuple(s.lower() for s in suffixes)
    suffix = Path(path).suffix.lower()
    if suffix and suffix not in allowed:
        raise ValueError(
            f"{what} {path}: suffix '{suffix}' names another format; this writes "
            f"{' / '.join(allowed)}"
        )


def check_output_file(
    path: str | os.PathLike,
    what: str = "--out",
    inputs: Inputs = None,
    suffixes: Iterable[str] | None = None,
) -> Path:
    """Prove that a file can be written at ``path`` *before* any work is done.

    Refuses a path that is one of the command's ``inputs`` (see
    :func:`refuse_overwriting_inputs`), whose suffix is not one of ``suffixes`` (when given),
    that is an existing folder, whose parent is a file, or whose folder cannot be created or
    written to. Creates missing parent folders (as the atomic writers do); writes and removes a
    probe file next to the target, so an existing target is left untouched.

    Raises:
        ValueError: one line naming ``what`` and the path.
    """
    path = Path(path)
    refuse_overwriting_inputs(path, inputs, what)
    if suffixes is not None:
        check_output_suffix(path, suffixes, what)
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a folder, expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test-"):
            pass
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, err) from None
        raise ValueError(f"{what} {path}: cannot write there: {err.strerror or err}") from None
    return path


def check_output_dir(path: str | os.PathLike, what: str = "--out", inputs: Inputs = None) -> Path:
    """Like ``ensure_writable_dir`` but naming the option: refuses an existing file, and a
    folder that is or holds one of ``inputs``."""
    path = Path(path)
    refuse_overwriting_inputs(path, inputs, what, folder=True)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path}: is a file, expected a folder")
    try:
        return ensure_writable_dir(path)
    except ValueError as err:
        raise ValueError(f"{what} {path}: {str(err).split(': ', 1)[-1]}") from None
