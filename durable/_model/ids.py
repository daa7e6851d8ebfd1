"""Instance ids, workflow names and signal names: what is valid, and how a new id is made.

Shared by every layer that takes one from a user (the front-ends check names
at decoration, the engine ids at ``start()``, the stores on every write, the
record codec on every read), so a bad name is refused the same way wherever
it comes in.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from .clock import EPOCH

__all__ = [
    "MAX_ID_LENGTH", "check_instance_id", "check_signal_name", "check_workflow_name", "is_valid_id",
    "new_instance_id",
]

MAX_ID_LENGTH = 200


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    if "\0" in value:
        raise ValueError(f"{what} may not contain NUL: {value!r}")
    if len(value.encode()) > MAX_ID_LENGTH:
        raise ValueError(f"{what} may be at most {MAX_ID_LENGTH} bytes: {value[:40]!r}...")
    return value


def check_instance_id(instance_id: object) -> str:
    """``instance_id`` if it is a usable id; ``ValueError`` naming the problem otherwise."""
    return _check_name(instance_id, "an instance id")


def check_workflow_name(name: object) -> str:
    """``name`` if it is a usable workflow name; ``ValueError`` naming the problem otherwise."""
    return _check_name(name, "a workflow name")


def new_instance_id(created_at: datetime) -> str:
    """A new instance id: a UUID version 7 (RFC 9562) as 32 hex digits.

    Its first 12 digits are ``created_at`` (the instance's creation time, an
    aware ``datetime``) in milliseconds since the epoch, and 74 of its other
    bits are random, so ids sort by creation time, to the millisecond (within
    one, at random). That keeps the records of instances started together
    next to each other in the store's B-trees: a commit of many checkpoints
    rewrites a few pages, not a page per record all over the tree. The
    creation time can be read back from the id; the random bits still make
    two ids of one millisecond differ, but an id is not a secret.
    """
    millis = (created_at - EPOCH) // _MILLISECOND
    rand = int.from_bytes(os.urandom(10))
    return "%032x" % (millis << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & _LOW62)


_LOW62 = (1 << 62) - 1
_MILLISECOND = timedelta(milliseconds=1)


def is_valid_id(instance_id: object) -> bool:
    """Whether ``instance_id`` could name a stored instance (reads of others find nothing)."""
    try:
        check_instance_id(instance_id)
    except ValueError:
        return False
    return True


def check_signal_name(name: object) -> str:
    """``name`` if it is a usable signal name; ``ValueError`` naming the problem otherwise."""
    return _check_name(name, "a signal name")
