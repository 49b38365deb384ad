"""A fix's 1-sigma accuracy in metres, as the backends send it (json-gpsr `ha`/`va`, Traccar
`accuracy`): one function, so that every server is told the same number for the same fix.

GST, when the receiver sent it, is its own error estimate; else DOP x UERE, with UERE (user
equivalent range error) 5 m by default: a typical single-frequency receiver's range error,
1 sigma. None when the receiver gave neither.
"""

from __future__ import annotations

import math

from tracker.fix import Fix

DEFAULT_UERE_M = 5.0


def accuracy(fix: Fix, uere_m: float = DEFAULT_UERE_M) -> tuple[float | None, float | None]:
    """(horizontal, vertical) in metres, 1 sigma: GST when sent, else DOP x UERE; None when
    unknown."""
    if fix.err_lat is not None and fix.err_lon is not None:
        ha: float | None = math.hypot(fix.err_lat, fix.err_lon)
    elif fix.hdop is not None:
        ha = fix.hdop * uere_m
    else:
        ha = None
    if fix.err_alt is not None:
        va: float | None = fix.err_alt
    elif fix.vdop is not None:
        va = fix.vdop * uere_m
    else:
        va = None
    return ha, va
