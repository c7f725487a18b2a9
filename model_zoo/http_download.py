"""Plain HTTP(S) downloads that resume and verify: the transport of ``url`` registry sources.

A file is written to ``NAME.part`` next to its destination. An interrupted transfer (dropped
connection, timeout, killed process) leaves the ``.part`` file; the next attempt sends
``Range: bytes=<size of .part>-`` and appends only the missing bytes (a server that ignores the Range
header and answers 200 restarts the file from zero). When the transfer completes the sha256 of the
whole file is compared with the expected one: a mismatch removes the file and raises
:class:`~model_zoo.integrity.ChecksumMismatchError`; a match renames ``.part`` to the destination.

Transfers use the standard library (``urllib``); a lock file in ``$TINYGG_HOME/locks`` (``filelock``, a
dependency of huggingface_hub) keeps two processes from appending to the same ``.part``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from .integrity import ChecksumMismatchError
from .registry import tinygg_home

logger = logging.getLogger(__name__)

USER_AGENT = "tinygroundinggpt-model-zoo/0.1 (+urllib)"
_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(OSError):
    """A transfer failed after its retries; the ``.part`` file is kept so a later call resumes."""


def _lock_path(dest: Path) -> Path:
    """A lock file per destination, kept out of the model directory."""
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:16]
    path = tinygg_home() / "locks" / f"{dest.name}-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _hash_existing(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h


def _one_attempt(url: str, part: Path, *, timeout: float, expected_size: int | None, bar: tqdm) -> None:
    """Append the missing bytes of ``url`` to ``part``. Raises on network errors (the caller retries)."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset == expected_size:
        return
    if expected_size is not None and offset > expected_size:
        logger.warning(
            "%s is larger than expected (%d > %d bytes); restarting it", part, offset, expected_size
        )
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Range not satisfiable: the .part already holds the whole file (size unknown to us) or is bad.
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total is not None and total == offset:
                return
            logger.warning("server refused to resume %s at byte %d; restarting", url, offset)
            part.unlink()
            raise DownloadError(f"cannot resume {url} at byte {offset} (HTTP 416); restarted") from exc
        raise
    with resp:
        mode = "ab"
        if offset and resp.status == 200:
            logger.warning("server ignored the Range header for %s; downloading from byte 0", url)
            offset, mode = 0, "wb"
        elif resp.status == 206:
            start = _start_from_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(
                    f"{url}: asked for bytes from {offset}, server sent a range starting at {start}"
                )
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else expected_size
        if total is not None:
            bar.total = total
        bar.n = offset
        bar.refresh()
        with open(part, mode) as fh:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                bar.update(len(chunk))
        written = part.stat().st_size
        if total is not None and written < total:
            raise http.client.IncompleteRead(b"", total - written)


def _start_from_content_range(value: str | None) -> int | None:
    m = _CONTENT_RANGE.match(value or "")
    return int(m.group(1)) if m else None


def _total_from_content_range(value: str | None) -> int | None:
    m = re.match(r"bytes\s+\*/(\d+)", value or "")
    return int(m.group(1)) if m else None


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` with resume and sha256 verification (see the module docstring).

    ``retries`` is the number of extra attempts after a network failure, each resuming where the last
    one stopped. After the last failure :class:`DownloadError` is raised and ``dest.part`` is kept.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # one writer per file: a second process waits, then finds the file done (or resumes the .part)
    with FileLock(str(_lock_path(dest))):
        if dest.exists() and sha256 is not None and _hash_existing(dest).hexdigest() == sha256:
            return dest
        return _download_unlocked(
            url,
            dest,
            sha256=sha256,
            size=size,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            progress=progress,
        )


def _download_unlocked(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None,
    retries: int,
    timeout: float,
    backoff: float,
    progress: bool,
) -> Path:
    part = part_path(dest)
    attempt = 0
    with tqdm(total=size, initial=0, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
        while True:
            try:
                _one_attempt(url, part, timeout=timeout, expected_size=size, bar=bar)
                break
            except urllib.error.HTTPError as exc:
                if exc.code in (408, 429) or exc.code >= 500:
                    err: Exception = exc
                else:
                    raise DownloadError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
            except (
                TimeoutError,
                http.client.HTTPException,
                urllib.error.URLError,
                ConnectionError,
                DownloadError,
            ) as exc:
                err = exc
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DownloadError(
                    f"GET {url} failed after {attempt} attempt(s): {err!r}; {have} bytes kept in {part}, "
                    "run the same command again to resume"
                ) from err
            logger.warning(
                "transfer of %s interrupted at byte %d (%r); resuming (%d/%d)",
                url,
                have,
                err,
                attempt,
                retries,
            )
            time.sleep(backoff * attempt)
    if sha256 is not None:
        digest = _hash_existing(part).hexdigest()
        if digest != sha256:
            got_size = part.stat().st_size
            part.unlink()
            raise ChecksumMismatchError(
                f"{url}: sha256 of the downloaded file is {digest} ({got_size} bytes), the registry expects "
                f"{sha256}; the file was removed. The source changed or the registry entry is wrong."
            )
    os.replace(part, dest)
    return dest
