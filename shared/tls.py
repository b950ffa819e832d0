"""The TLS context of the process's clients, built once per CA bundle."""

from __future__ import annotations

import functools
import ssl


@functools.cache
def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """A verifying TLS context trusting ca_bundle (a PEM file; empty: the system's store). Built once per bundle and
    process: loading a CA bundle costs about 100 ms of CPU here, too much to pay per invocation or per connection."""
    return ssl.create_default_context(cafile=ca_bundle or None)
