"""Bearer tokens, compared in constant time, and who a caller is.

A client's token (DISPATCH_TOKENS) dispatches and reads what it dispatched; an
operator's (OPERATOR_TOKENS) reads everything. Each entry records the fingerprint of
the token that dispatched it (never the token), so its result and status are shown to
that token only."""

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

# Flask endpoint names that need a token; health, metrics and the console's own
# sign-in stay outside.
DISPATCHING = ("dispatch",)
READING = ("result", "task_status", "task_cancel")


@dataclass(frozen=True, slots=True)
class Caller:
    fingerprint: str | None  # None: an anonymous run on loopback (everyone's)
    operator: bool = False

    def may_read(self, owner: str | None) -> bool:
        """An entry with no owner is everyone's; one with an owner, its owner's and
        the operators'."""
        return self.operator or owner is None or owner == self.fingerprint


def fingerprint(token: str) -> str:
    """What an entry records of the token that dispatched it: 64 bits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def presented(header: str | None) -> str | None:
    if not header or not header.startswith("Bearer "):
        return None
    return header.removeprefix("Bearer ").strip()


def matches(token: str | None, tokens: Sequence[str]) -> bool:
    """Whether `token` is one of `tokens`. Every token is compared, matched or not, so
    the time taken does not tell how close a guess was."""
    matched = False
    for known in tokens:
        matched |= hmac.compare_digest((token or "").encode(), known.encode())
    return matched and token is not None


def authorized(header: str | None, tokens: Sequence[str]) -> bool:
    """Whether `Authorization: Bearer <token>` names one of `tokens`."""
    return matches(presented(header), tokens)


def caller(
    header: str | None, clients: Sequence[str], operators: Sequence[str] = ()
) -> Caller | None:
    """Who presents this header: a client, an operator (when `operators` may), or
    nobody we know (None)."""
    token = presented(header)
    is_client, is_operator = matches(token, clients), matches(token, operators)
    if token is None or not (is_client or is_operator):
        return None
    return Caller(fingerprint(token), operator=is_operator)
