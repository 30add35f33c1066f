"""Bearer tokens for /dispatch and /results, compared in constant time."""

import hmac
from collections.abc import Sequence

PROTECTED = ("dispatch", "result")  # Flask endpoint names; health and metrics stay open


def authorized(header: str | None, tokens: Sequence[str]) -> bool:
    """Whether `Authorization: Bearer <token>` names one of `tokens`. Every token is
    compared, matched or not, so the time taken does not tell how close a guess was."""
    if not header or not header.startswith("Bearer "):
        return False
    presented = header.removeprefix("Bearer ").strip().encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token.encode())
    return matched
