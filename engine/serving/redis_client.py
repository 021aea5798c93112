"""How serving talks to Redis, for the stores that every worker and host share (sessions, latent codes).

Short timeouts and one immediate retry (for a pooled connection that a Redis restart closed), so that a Redis
outage costs a request a fraction of a second rather than redis-py's default retries with back-off; a
description of the server for logs and errors that leaves out the URL's credentials; and a check that it
answers, for the start-up log; and the prefix that every key Vitrine writes in Redis starts with.
"""

from __future__ import annotations

import re

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: What every key Vitrine writes starts with (``vitrine:session:…``, ``vitrine:latent:…``); another prefix
#: (``VITRINE_REDIS_PREFIX``) lets several deployments, or test runs, share one Redis. Redis Cluster has one
#: database only, so there a prefix is the only way to keep them apart.
DEFAULT_PREFIX = "vitrine:"
# no braces (they would change a key's Cluster slot), glob characters or spaces: letters, digits and _.:-
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def check_prefix(prefix: str) -> str:
    """``prefix`` when it may start Redis keys, else ValueError saying what one may hold."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"a Redis key prefix is 1-64 letters, digits or _.:- (like {DEFAULT_PREFIX!r}); got {prefix[:80]!r}"
        )
    return prefix


def connect(url: str, *, timeout_seconds: float = 0.5) -> redis.Redis:
    """A client for the Redis at ``url`` (``redis://host:6379/0``, ``rediss://`` for TLS, ``unix://``).

    ``timeout_seconds`` bounds connecting and each command. The client connects lazily: :func:`problem` says
    whether Redis answers. ValueError when ``url`` is not a Redis URL (the message leaves the URL out: it may
    hold a password).
    """
    try:
        return redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, retry=Retry(NoBackoff(), 1)
        )
    except ValueError as exc:  # redis-py names the schemes it takes
        raise ValueError(f"redis_url is not a Redis URL ({exc}); fix it, or unset it for one worker") from exc


def describe(client: redis.Redis) -> str:
    """``Redis at host:port/db``, for logs and errors."""
    kw = client.connection_pool.connection_kwargs
    return f"Redis at {kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}/{kw.get('db', 0)}"


def problem(client: redis.Redis) -> str | None:
    """None when Redis answers a PING, else what went wrong."""
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{describe(client)} does not answer: {exc}"
    return None
