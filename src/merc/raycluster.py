"""Joining Ray, for the two things merc runs on it (``merc bench accuracy --backend ray`` and
``merc predict --backend ray``). Ray is the optional ``ray`` extra: imported here, only when one
of those is asked for."""

from __future__ import annotations


def connect(address: str | None = None):
    """The ``ray`` module, connected: to the cluster at ``address``, else to a Ray instance
    already running in this process, else to a new local one (no dashboard, worker logs not
    forwarded, the caller's logging left alone).

    Raises:
        ValueError: Ray is not installed (one line naming the extra).
    """
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install 'merc[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    return ray
