"""A dead-letter record: one final failure of one message, with everything needed to act on it.

Records are msgpack-encoded (never pickled) with a format version, so a
record written by one release is read by the next.  A stored value that
cannot be decoded raises :class:`~dramatiq_resilience.errors.CorruptRecord`
naming the record id; listings show it as an :class:`UnreadableRecord`
instead of failing.

Categories (``DeadLetterRecord.category``):

=============  ===============================================================
``transient``  retries exhausted (the error might go away: redrive candidates)
``permanent``  an exception listed in the actor's ``throws``, or an unknown
               actor: retrying cannot help
``timeout``    the final attempt hit Dramatiq's ``TimeLimit``
``expired``    Dramatiq's ``AgeLimit`` skipped it: too old to run
``rejected``   a resilience decision dead-lettered it without running it
               (idempotency conflict, breaker ``"fail"``, too many deferrals,
               an invalid message option)
``imported``   copied from a broker's own dead-letter queue (``<queue>.XQ``)
=============  ===============================================================
"""

from __future__ import annotations

import base64
import dataclasses
import traceback as tb
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import SkipMessage, TimeLimitExceeded

from ..errors import CorruptRecord, Rejected

__all__ = [
    "CATEGORIES",
    "EXPIRED",
    "FIRST_FAILURE_OPTION",
    "IMPORTED",
    "PERMANENT",
    "REDRIVES_OPTION",
    "REJECTED",
    "STATUSES",
    "TIMEOUT",
    "TRANSIENT",
    "ChainLink",
    "DeadLetterRecord",
    "Redrive",
    "UnreadableRecord",
    "build_record",
    "classify",
    "error_type_name",
    "exception_chain",
    "format_traceback",
    "record_id_for",
    "redrives_of",
]

TRANSIENT = "transient"
PERMANENT = "permanent"
TIMEOUT = "timeout"
EXPIRED = "expired"
REJECTED = "rejected"
IMPORTED = "imported"

#: Every failure category, in the order reports list them.
CATEGORIES = (TRANSIENT, PERMANENT, TIMEOUT, EXPIRED, REJECTED, IMPORTED)

#: Record statuses: ``dead`` (in the dead-letter store, listed by default),
#: ``claimed`` (a requeue is enqueueing it right now), ``requeued`` (kept for
#: its history until retention removes it).
STATUSES = ("dead", "claimed", "requeued")

#: The encoding version written in every record.
FORMAT_VERSION = 1

#: The longest traceback kept, in characters; longer ones keep their head and tail.
MAX_TRACEBACK_CHARS = 32_768

#: Exception chains longer than this are cut (a cycle-safe bound).
MAX_CHAIN = 16


def record_id_for(message_id: str, redrives: int = 0) -> str:
    """The record id of ``message_id``'s final failure after ``redrives`` redrives.

    Deterministic, so a failure captured by the middleware and the same
    message found later in the broker's dead-letter queue are one record.
    """
    return message_id if redrives == 0 else f"{message_id}-r{redrives}"


def error_type_name(kind: type[BaseException]) -> str:
    """``module.QualName`` of an exception class (builtins without a module)."""
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def classify(exception: BaseException | None, *, throws: Any = None) -> str:
    """The category of a final failure caused by ``exception``.

    ``throws`` is the actor's (or message's) ``throws`` option.
    """
    if isinstance(exception, Rejected):
        return REJECTED
    if type(exception) is SkipMessage:  # Dramatiq's AgeLimit fails and skips with a bare SkipMessage
        return EXPIRED
    if isinstance(exception, SkipMessage):
        return REJECTED
    if isinstance(exception, TimeLimitExceeded):
        return TIMEOUT
    if isinstance(exception, ActorNotFound):
        return PERMANENT
    if throws and exception is not None and isinstance(exception, throws):
        return PERMANENT
    return TRANSIENT


def _clip(text: str, limit: int = MAX_TRACEBACK_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = limit // 8
    tail = limit - head
    return f"{text[:head]}\n... {len(text) - limit} characters omitted ...\n{text[-tail:]}"


def format_traceback(exception: BaseException, *, chain: bool = True) -> str:
    """The traceback of ``exception`` as Python prints it (with its chain unless ``chain=False``)."""
    lines = tb.format_exception(type(exception), exception, exception.__traceback__, chain=chain)
    return _clip("".join(lines))


@dataclass(frozen=True)
class ChainLink:
    """One exception of a failure's chain: the cause or context of the one before it.

    Attributes:
      relation: ``"cause"`` (``raise ... from``) or ``"context"`` (raised while
        handling it).
      error_type, error_message: the exception's type name and ``str()``.
      traceback: that exception's own traceback.
    """

    relation: str
    error_type: str
    error_message: str
    traceback: str = ""


def exception_chain(exception: BaseException) -> tuple[ChainLink, ...]:
    """The causes and contexts of ``exception``, nearest first (itself excluded)."""
    links: list[ChainLink] = []
    seen = {id(exception)}
    current = exception
    while len(links) < MAX_CHAIN:
        if current.__cause__ is not None:
            nxt, relation = current.__cause__, "cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            nxt, relation = current.__context__, "context"
        else:
            break
        if id(nxt) in seen:
            break
        seen.add(id(nxt))
        links.append(
            ChainLink(relation, error_type_name(type(nxt)), str(nxt), format_traceback(nxt, chain=False))
        )
        current = nxt
    return tuple(links)


@dataclass(frozen=True)
class Redrive:
    """One requeue of a dead letter.

    Attributes:
      at: when, in milliseconds since the epoch.
      record_id: the record that was requeued.
      queue_name: where the message was enqueued.
      reason: ``"manual"`` or ``"policy:<name>"``.
      host: the host that requeued it.
    """

    at: int
    record_id: str
    queue_name: str
    reason: str
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Redrive:
        return cls(
            at=int(data["at"]),
            record_id=str(data["record_id"]),
            queue_name=str(data["queue_name"]),
            reason=str(data["reason"]),
            host=str(data.get("host", "")),
        )


@dataclass(frozen=True)
class DeadLetterRecord:
    """One final failure of one message.

    Attributes:
      record_id: ``message_id`` (``message_id-rN`` after N redrives).
      message_id, queue_name, actor_name, args, kwargs, options,
        message_timestamp: the whole message (``queue_name`` canonical,
        ``message_timestamp`` in milliseconds).  Redacted values read
        ``"[redacted]"`` (see ``redacted``).
      category: one of :data:`CATEGORIES`.
      error_type: the final exception's ``module.QualName``; ``error_message``
        its ``str()``; ``traceback`` the final attempt's traceback, with its
        chain as Python prints it.
      chain: the final exception's causes and contexts, nearest first.
      attempts: deliveries that ended in failure (``retries + 1``).
      first_failure_at, last_failure_at: milliseconds since the epoch.
      host, pid, version: where it failed, and the dramatiq-resilience version.
      redrives: every earlier requeue of this message, oldest first, and this
        record's own requeue once it is requeued.
      redacted: the paths of the values replaced by ``"[redacted]"``.
      source: ``"capture"``, or ``"import:<broker>"`` for imported records.
      status: ``"dead"``, ``"claimed"`` or ``"requeued"`` (kept in the store's
        index, not in the encoded record).
      raw: for an imported message the broker could not decode, its bytes
        (such a record cannot be requeued).
    """

    record_id: str
    message_id: str
    queue_name: str
    actor_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    message_timestamp: int
    category: str
    error_type: str
    error_message: str
    traceback: str
    chain: tuple[ChainLink, ...]
    attempts: int
    first_failure_at: int
    last_failure_at: int
    host: str
    pid: int
    version: str
    redrives: tuple[Redrive, ...] = ()
    redacted: tuple[str, ...] = ()
    source: str = "capture"
    status: str = "dead"
    raw: bytes | None = field(default=None, repr=False)

    readable = True

    # -- encoding -----------------------------------------------------------------

    def encode(self, *, redrives: tuple[Redrive, ...] | None = None) -> bytes:
        """The msgpack encoding stored in the backend (``status`` is not part of it).

        With ``redrives``, the encoding of this record with that history
        instead (what a requeue stores), without building that record.
        """
        data = self._plain()
        if redrives is not None:
            data["redrives"] = [item.to_dict() for item in redrives]
        data.pop("status")
        data["v"] = FORMAT_VERSION
        try:
            return msgpack.packb(data, use_bin_type=True, default=repr)
        except (OverflowError, ValueError, TypeError):
            # Values msgpack cannot hold (huge integers, deep nesting) are kept as text.
            for name in ("args", "kwargs", "options"):
                data[name] = _printable(data[name])
            return msgpack.packb(data, use_bin_type=True, default=repr)

    @classmethod
    def decode(cls, record_id: str, payload: bytes, *, status: str = "dead") -> DeadLetterRecord:
        """Decode a stored record; raise :class:`CorruptRecord` if it cannot be read."""
        try:
            data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            if not isinstance(data, dict):
                raise TypeError(f"expected a map, got {type(data).__name__}")
            if data.get("v") != FORMAT_VERSION:
                raise ValueError(f"unknown record format version {data.get('v')!r}")
            return cls(
                record_id=str(data["record_id"]),
                message_id=str(data["message_id"]),
                queue_name=str(data["queue_name"]),
                actor_name=str(data["actor_name"]),
                args=tuple(data["args"]),
                kwargs=dict(data["kwargs"]),
                options=dict(data["options"]),
                message_timestamp=int(data["message_timestamp"]),
                category=str(data["category"]),
                error_type=str(data["error_type"]),
                error_message=str(data["error_message"]),
                traceback=str(data["traceback"]),
                chain=tuple(ChainLink(**link) for link in data["chain"]),
                attempts=int(data["attempts"]),
                first_failure_at=int(data["first_failure_at"]),
                last_failure_at=int(data["last_failure_at"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                version=str(data["version"]),
                redrives=tuple(Redrive.from_dict(item) for item in data["redrives"]),
                redacted=tuple(str(path) for path in data["redacted"]),
                source=str(data["source"]),
                status=status,
                raw=data.get("raw"),
            )
        except Exception as exc:
            raise CorruptRecord(
                f"Dead-letter record {record_id!r} is unreadable: {type(exc).__name__}: {exc}", key=record_id
            ) from exc

    @staticmethod
    def newer_format(payload: bytes | None) -> bool:
        """Whether ``payload`` is a record of a newer format version than this release reads.

        Such a record is unreadable here but not corrupt: a newer release
        (during a rolling deploy, say) reads it.
        """
        try:
            data = msgpack.unpackb(payload, raw=False, strict_map_key=False) if payload else None
        except Exception:
            return False
        version = data.get("v") if isinstance(data, dict) else None
        return isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION

    def _plain(self) -> dict[str, Any]:
        data = dict(vars(self))  # shallow: asdict() would deep-copy the arguments
        data["args"] = list(self.args)
        data["chain"] = [dict(vars(link)) for link in self.chain]
        data["redrives"] = [item.to_dict() for item in self.redrives]
        data["redacted"] = list(self.redacted)
        return data

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (``raw`` as base64), for export and ``--json``."""
        data = self._plain()
        data["raw"] = None if self.raw is None else base64.b64encode(self.raw).decode("ascii")
        data["readable"] = True
        return _printable(data)

    # -- convenience --------------------------------------------------------------

    @property
    def redrive_count(self) -> int:
        """How many times this message was requeued before (and by) this record."""
        return len(self.redrives)

    def replace(self, **changes: Any) -> DeadLetterRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class UnreadableRecord:
    """A stored record that cannot be decoded, as listings show it.

    The store's index still knows where it belongs (status, time, actor,
    queue, error type, category), so it can be listed, filtered and purged;
    it cannot be requeued.

    Attributes:
      record_id: the record's id.
      problem: why it cannot be read.
      status, last_failure_at, actor_name, queue_name, error_type, category:
        from the index (``""``/``0`` when the index is missing too).
    """

    record_id: str
    problem: str
    status: str = "dead"
    last_failure_at: int = 0
    actor_name: str = ""
    queue_name: str = ""
    error_type: str = ""
    category: str = ""

    readable = False

    @property
    def error(self) -> CorruptRecord:
        """The error that :meth:`DeadLetterStore.get` raises for this record."""
        return CorruptRecord(self.problem, key=self.record_id)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["readable"] = False
        return data


def _printable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into text (bytes as base64)."""
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): _printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_printable(item) for item in value]
    return repr(value)


#: Message option stamped on retries: when the message first failed (ms).
FIRST_FAILURE_OPTION = "dead_letter_first_failure_at"

#: Message option carrying a message's redrive history (a list of dicts).
REDRIVES_OPTION = "dead_letter_redrives"


def redrives_of(options: Mapping[str, Any]) -> tuple[Redrive, ...]:
    """The redrive history carried by a message's options (malformed entries are dropped)."""
    history = []
    for item in options.get(REDRIVES_OPTION) or ():
        try:
            history.append(Redrive.from_dict(item))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(history)


def build_record(
    message: Any,
    *,
    category: str,
    error_type: str,
    error_message: str,
    traceback: str,
    chain: tuple[ChainLink, ...],
    attempts: int,
    failed_at: int,
    host: str,
    pid: int,
    source: str = "capture",
    redact_keys: Any = (),
    fn: Any = None,
) -> DeadLetterRecord:
    """A record of ``message`` (a Dramatiq ``Message`` or ``MessageProxy``) failing at ``failed_at`` ms.

    Its id comes from the message id and the number of redrives in its
    options; ``redact_keys`` and the actor function ``fn`` drive redaction.
    """
    from .. import __version__
    from .redaction import redact_message

    options = dict(message.options)
    options.pop("traceback", None)  # Retries' copy of an earlier traceback; the record has its own
    redrives = redrives_of(options)
    first = options.get(FIRST_FAILURE_OPTION)
    redacted = redact_message(message.args, message.kwargs, options, redact_keys, fn=fn)
    queue_name = message.queue_name
    if queue_name.endswith((".DQ", ".XQ")):
        queue_name = queue_name[:-3]
    return DeadLetterRecord(
        record_id=record_id_for(message.message_id, len(redrives)),
        message_id=message.message_id,
        queue_name=queue_name,
        actor_name=message.actor_name,
        args=redacted.args,
        kwargs=redacted.kwargs,
        options=redacted.options,
        message_timestamp=int(message.message_timestamp),
        category=category,
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
        chain=chain,
        attempts=attempts,
        first_failure_at=int(first) if isinstance(first, (int, float)) and first <= failed_at else failed_at,
        last_failure_at=failed_at,
        host=host,
        pid=pid,
        version=__version__,
        redrives=redrives,
        redacted=tuple(redacted.paths),
        source=source,
    )
