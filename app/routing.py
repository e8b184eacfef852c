"""A lean route class for the signed webhooks, the API's busiest machine callers.

FastAPI's request handler solves dependencies, validates every parameter, and
validates and serialises the returned model. A webhook needs none of it: it reads
the raw body to check a signature, takes a path parameter and a header as plain
text, and answers a small JSON document. Measured in process on a tracking push
that is a duplicate (one SQL statement), FastAPI's handler and the routing in front
of it were about a fifth of the request's CPU.

`PlainRoute` keeps what FastAPI gives these routes through the endpoint's signature,
the OpenAPI operation above all, and calls the endpoint itself: the `Request`, each
path parameter as the text the path matched, each header as sent or None. The
endpoint answers a `Response` of its own. The middleware, the exception handlers
and the body limit all apply as to any route.

An endpoint may declare only these: a parameter taking the `Request`, path parameters
of type `str`, and optional headers of type `str | None` (default None). A
route that declares anything else (a body, a query, a dependency) fails where it is
declared; dependencies added by the router that includes it are refused too, when
FastAPI first builds the included route (at its first match).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import AliasChoices, AliasPath
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PlainRoute(APIRoute):
    """A route whose endpoint is called with the request, its path texts and headers."""

    def get_route_handler(self) -> Handler:
        endpoint = self.endpoint
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{self.path}: a plain route's endpoint is a coroutine function.")
        request_name, path_names, headers = _plain_parameters(self._dependant_in_force(), self.path)

        async def handler(request: Request) -> Response:
            kwargs: dict[str, Any] = {request_name: request}
            for name in path_names:
                kwargs[name] = request.path_params[name]
            if headers:
                sent = request.headers
                for name, header in headers:
                    kwargs[name] = sent.get(header)
            response = await endpoint(**kwargs)
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: a plain route's endpoint answers a Response.")
            return response

        return handler

    def _dependant_in_force(self) -> Dependant:
        """The endpoint's dependant as FastAPI would solve it here.

        FastAPI 0.165 builds a route's handler again each time its router is included,
        with the including routers' dependencies added to a dependant of that
        inclusion, passed in a context variable of its own. Those dependencies would
        be skipped here without a word, so they are looked at too (and refused).
        """
        context_var = getattr(fastapi_routing, "_effective_route_context_var", None)
        context = context_var.get() if context_var is not None else None
        if context is not None and getattr(context, "original_route", None) is self:
            return cast(Dependant, context.dependant)
        return self.dependant


def _plain_parameters(
    dependant: Dependant, path: str
) -> tuple[str, list[str], list[tuple[str, str]]]:
    """The request's parameter name, the path parameters' names, and (name, header) pairs."""
    refused = [
        kind
        for kind, present in (
            ("query parameters", dependant.query_params),
            ("cookies", dependant.cookie_params),
            ("body", dependant.body_params),
            ("dependencies", dependant.dependencies),
        )
        if present
    ]
    if refused:
        raise TypeError(f"{path}: a plain route takes no {', '.join(refused)}.")
    if dependant.request_param_name is None:
        raise TypeError(f"{path}: a plain route's endpoint takes the Request.")
    for field in dependant.path_params:
        if field.field_info.annotation is not str:
            raise TypeError(f"{path}: path parameter {field.name!r} is read as str.")
    headers: list[tuple[str, str]] = []
    for field in dependant.header_params:
        info = field.field_info
        if info.annotation != str | None or info.default is not None:
            raise TypeError(
                f"{path}: header parameter {field.name!r} is optional (str | None, default None)."
            )
        if isinstance(info.validation_alias, AliasChoices | AliasPath):
            raise TypeError(f"{path}: header parameter {field.name!r} has one name, its alias.")
        # FastAPI's own header name: the alias, or the name with `_` as `-`.
        headers.append((field.name, field.alias.lower()))
    return (
        dependant.request_param_name,
        [field.name for field in dependant.path_params],
        headers,
    )
