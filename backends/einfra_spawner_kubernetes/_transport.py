"""One request to the Kubernetes API server: the connections, the token, the answer as a dict.

Part of the backend's API layer, below the resource operations of :mod:`._api` (which retry
what fails here, see :mod:`._retry`). :func:`exchange` sends one request, through either a
method of kubernetes-asyncio's generated client (lists) or this module's :class:`Transport`
(creates, deletes, gets, updates), always with ``_preload_content=False`` so that responses stay
plain dicts (no conversion into model objects); every failure comes out as an
:class:`~._api_errors.ApiError`.

:class:`Transport` skips the generated client's request building, which costs more CPU than
the request itself in a spawn storm (it walks the whole pod manifest in
``sanitize_for_serialization``): it sends on a bounded pool of aiohttp connections of its own,
with the client's configuration (host, TLS, proxy, and the bearer token through the client's
own ``update_params_for_auth``, so refreshed tokens keep working), the body serialised once as
compact JSON. Its session does not "trust the environment": with kubernetes-asyncio's session
aiohttp looks up ``~/.netrc`` and the proxy variables in a worker thread for every request (two
thread hops, about half the CPU of a request); the proxy variables are read once here instead,
and ``~/.netrc`` not at all (the API server's credentials come from the kubeconfig).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from kubernetes_asyncio import client

from ._api_errors import NoResponse, api_error

__all__ = ["Transport", "exchange", "tls_context"]


def tls_context(configuration: client.Configuration) -> ssl.SSLContext | None:
    """The TLS settings of ``configuration``, as the generated client applies them (``None``
    for a plain-HTTP server). Building one takes ~20 ms of blocking work: call it in a thread."""
    if not str(configuration.host or "").startswith("https:"):
        return None
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _environment_proxy(url: str) -> str | None:
    """The proxy the environment (``https_proxy``, ``no_proxy``...) names for ``url``, if any."""
    parts = urlsplit(url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    proxy = getproxies().get(parts.scheme)
    return str(proxy) if proxy else None


class Transport:
    """The connections of creates, deletes, gets and updates, with the client's configuration."""

    def __init__(
        self, api_client: client.ApiClient, *, connections: int = 16, tls: ssl.SSLContext | None = None
    ) -> None:
        self.client = api_client
        rest = api_client.rest_client
        # Connections of its own, bounded: watches hold the generated client's connections for
        # minutes, and must never leave a create waiting for one (nor the other way round).
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=tls if tls is not None else True),
            trust_env=False,
        )
        self._extra: dict[str, Any] = {}
        self._host = str(api_client.configuration.host or "")
        proxy = rest.proxy or _environment_proxy(self._host)
        if proxy:
            self._extra["proxy"] = proxy
        if rest.proxy_headers:
            self._extra["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            self._extra["server_hostname"] = rest.server_hostname

    async def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        *,
        _request_timeout: float,
        **_: Any,
    ) -> aiohttp.ClientResponse:
        """One request on these connections; the caller reads and releases the response.

        It takes the generated client's keyword arguments (:func:`exchange` passes them to
        either) and uses only the timeout.
        """
        headers = {"Accept": "application/json", "User-Agent": self.client.user_agent}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, separators=(",", ":")).encode()
        # A coroutine from kubernetes-asyncio 33 on (it may refresh the token first), a plain
        # function before: the z2jh 4.2 hub image ships 32.3.
        authorised = self.client.update_params_for_auth(headers, [], ["BearerToken"])
        if inspect.isawaitable(authorised):
            await authorised
        return await self.session.request(
            method,
            self._host + path,
            params=query,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=_request_timeout),
            **self._extra,
        )

    async def close(self) -> None:
        """Close these connections (the generated client closes its own)."""
        await self.session.close()


async def exchange(
    what: str, timeout: float, call: Callable[..., Any], *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """``call(*args, **kwargs)`` once, within ``timeout`` seconds: the response's JSON object.

    ``call`` is :meth:`Transport.send` or a method of the generated client. A status other
    than 2xx raises its :func:`~._api_errors.api_error`; no answer raises
    :class:`~._api_errors.NoResponse`, which says whether the request may have reached the
    server. ``what`` (e.g. ``"create pods"``) begins the error's message.
    """
    try:
        response = await call(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
        try:
            raw = await response.read()
        finally:
            response.release()
    except (aiohttp.ClientSSLError, aiohttp.InvalidURL) as error:
        raise NoResponse(what, error, delivered=False, permanent=True) from error
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
        # No connection was made (refused, or none free in time): the request was not sent.
        raise NoResponse(what, error, delivered=False) from error
    except (asyncio.TimeoutError, TimeoutError, aiohttp.ClientError) as error:
        raise NoResponse(what, error, delivered=True) from error
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"message": raw[:200].decode("utf-8", "replace")}
    if not 200 <= response.status <= 299:
        raise api_error(
            response.status,
            body if isinstance(body, dict) else {},
            what,
            retry_after=response.headers.get("Retry-After"),
        )
    return body if isinstance(body, dict) else {}
