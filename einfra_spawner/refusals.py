"""Refusals as JupyterHub shows them: an HTTP error whose message alone reaches the user.

Where it sits: the spawner (:mod:`einfra_spawner.spawner`) and the steps of a server's life
(:mod:`einfra_spawner.lifecycle`) turn what the core, the ledger and the backend raise into the
error :func:`refusal` makes, with the status JupyterHub answers with. The two JupyterHub versions
read it differently (see :func:`refusal`).

How a refused request reaches the caller (JupyterHub 6.1.1 and 5.3; ``tests/e2e`` checks each
path on both):

* form posts are resolved in the spawner's ``options_from_form`` (query arguments in
  ``options_from_query``): JupyterHub shows the form again with the message (status 400; 200 on
  JupyterHub 5, which shows ``str()`` of the error), and starts nothing;
* REST requests are resolved in ``run_pre_spawn_hook``, which ``User.spawn`` calls before
  ``start``. The :class:`~jupyterhub.spawner.SpawnException` (status 400) comes out of
  ``POST /hub/api/users/{name}/servers/{server}`` as a 400 JSON error whose ``message`` is the
  resolver's; JupyterHub then stops the half-made server (the spawner's ``stop`` has no backend
  state yet, so it touches nothing) and the backend is never called. ``start`` resolves again if
  the hook was skipped, so no path starts an unvalidated request.
* a :class:`~einfra_spawner.BackendError` in ``start`` becomes a 503 with the backend's message
  (the REST body, the progress page, or the error page of the form).
* quotas are checked in the same ``run_pre_spawn_hook``, after resolution, against the usage
  ledger (:mod:`einfra_spawner.usage`): a refusal is a ``SpawnException`` with status 403, which
  JupyterHub passes through to the REST caller as a 403 JSON error with the quota's message, and
  the backend is never called. A ledger that does not answer refuses starts with a 503.
"""

from __future__ import annotations

from tornado import web

try:  # JupyterHub >= 6: a refusal that metrics count as a policy failure, not an error
    from jupyterhub.spawner import SpawnException
except ImportError:  # pragma: no cover - JupyterHub 5
    SpawnException = None

__all__ = ["refusal"]


class _Hub5Refusal(web.HTTPError):
    """A refusal on JupyterHub 5, whose ``str()`` is the message alone: JupyterHub 5's spawn
    page shows ``str(error)`` of a refused form post or query (tornado's own ``str()`` would
    read "HTTP 400: options (<message>)"); its REST API writes ``log_message % args``."""

    def __init__(self, message: str, *, reason: str, status: int) -> None:
        # The message as an argument: tornado escapes a "%" in a log message without arguments
        # (6.3 and later) or not (before), so only this form reads the same under both.
        super().__init__(status, "%s", message, reason=reason)
        self.jupyterhub_message = message

    def __str__(self) -> str:
        return self.jupyterhub_message


def refusal(message: str, *, reason: str, status: int = 400) -> web.HTTPError:
    """An HTTP error that JupyterHub shows as ``message`` alone: on the re-rendered form, on the
    progress page and in the REST API's JSON body (``jupyterhub_message`` is what JupyterHub 6's
    ``format_exception`` and API ``write_error`` read; JupyterHub 5's form reads ``str()``)."""
    if SpawnException is None:  # JupyterHub 5
        return _Hub5Refusal(message, reason=reason, status=status)
    error: web.HTTPError = SpawnException(message, reason=reason, status_code=status)
    error.jupyterhub_message = message  # type: ignore[attr-defined]  # read by JupyterHub
    return error
