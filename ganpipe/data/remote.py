"""Network access for downloads: short timeouts, a progress bar, md5 before the file appears.

Every machine this project runs on in CI is offline, so a download must fail within seconds and
say how to continue without the network, never hang or print a traceback.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ganpipe.data.base import offline_error
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import atomic_path, file_md5
from ganpipe.pipeline.stage import progress_disabled

# Seconds any single connect or read may block.
NETWORK_TIMEOUT_S = 15
NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError and socket timeouts are OSErrors


def describe_network_error(exc: BaseException) -> str:
    """One short phrase for a urllib/socket failure (URLError wraps the interesting reason)."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {NETWORK_TIMEOUT_S} s"
    return " ".join(str(reason).split()) or type(reason).__name__


@contextlib.contextmanager
def network_timeout() -> Iterator[None]:
    """Apply NETWORK_TIMEOUT_S to libraries that open sockets without a timeout (torchvision)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch_url(url: str, destination: Path, md5: str, what: str, local_copy: str) -> None:
    """Download `url` to `destination`; the file appears only complete and with the right md5.

    `what` names the data in messages; `local_copy` describes what data.source could point at
    instead (it goes into the offline error).
    """
    request = urllib.request.Request(url, headers={"User-Agent": "ganpipe"})
    with atomic_path(destination) as tmp:
        try:
            with (
                urllib.request.urlopen(request, timeout=NETWORK_TIMEOUT_S) as response,
                open(tmp, "wb") as out,
                tqdm(
                    total=response.length,
                    unit="B",
                    unit_scale=True,
                    desc=destination.name,
                    disable=progress_disabled(),
                ) as progress,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    progress.update(len(chunk))
        except NETWORK_ERRORS as exc:
            raise offline_error(f"{what} from {url}", describe_network_error(exc), local_copy) from None
        actual = file_md5(tmp)
        if actual != md5:
            raise GanpipeError(
                f"downloaded {what} from {url} has md5 {actual}, expected {md5} (incomplete or changed "
                "upstream); rerun the download, or set data.source to a verified local copy"
            )
