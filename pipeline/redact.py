"""Hide credentials that URIs carry (``scheme://user:password@host``) before text leaves the process.

The config holds such URIs (``mlflow.tracking_uri``, ``data.dvc_remote``, a source); they are logged as MLflow
params, written to the run log and shown in model cards, none of which should hold a password.
"""

from __future__ import annotations

import re

HIDDEN = "***"
# scheme://user:password@ -- the password runs to the last @ before the host (a password may contain @)
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<password>[^/\s]*)@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced by ``***`` (the user is kept)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{HIDDEN}@", text)


def restore(shown: str, secret: str) -> str:
    """``secret`` when ``shown`` is its redacted form (e.g. a stored tag that hid the password of the configured
    source, to be read again), else ``shown`` unchanged."""
    return secret if shown != secret and redact(secret) == shown else shown
