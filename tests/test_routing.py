"""PlainRoute: the webhooks' lean route class (app.routing)."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import AliasChoices, BaseModel

from app.routing import PlainRoute


class Ack(BaseModel):
    provider: str
    signature: str | None


class Boom(Exception):
    pass


def _app(route_class: type[APIRoute] = APIRoute) -> FastAPI:
    router = APIRouter(prefix="/v1", route_class=route_class)

    @router.post("/hooks/{provider}", response_model=Ack, tags=["hooks"])
    async def hook(
        request: Request,
        provider: str,
        signature: str | None = Header(default=None, alias="X-Signature"),
    ) -> Response:
        """A signed push."""
        body = await request.body()
        if body == b"boom":
            raise Boom
        if body == b"not a response":
            return {"provider": provider}  # type: ignore[return-value]
        return JSONResponse({"provider": provider, "signature": signature, "body": body.decode()})

    app = FastAPI()

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> JSONResponse:
        return JSONResponse({"handled": True}, status_code=418)

    app.include_router(router)
    return app


async def _post(app: FastAPI, path: str, body: bytes, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, content=body, headers=headers)


async def test_the_endpoint_gets_the_request_its_path_text_and_header():
    app = _app(PlainRoute)
    sent = await _post(app, "/v1/hooks/aftership", b"{}", **{"X-Signature": "abc=="})
    assert sent.status_code == 200
    assert sent.json() == {"provider": "aftership", "signature": "abc==", "body": "{}"}


async def test_a_header_not_sent_is_none():
    sent = await _post(_app(PlainRoute), "/v1/hooks/kuaidi100", b"x")
    assert sent.json() == {"provider": "kuaidi100", "signature": None, "body": "x"}


async def test_the_apps_exception_handlers_still_apply():
    sent = await _post(_app(PlainRoute), "/v1/hooks/aftership", b"boom")
    assert (sent.status_code, sent.json()) == (418, {"handled": True})


async def test_an_endpoint_answering_anything_but_a_response_is_an_error():
    sent = await _post(_app(PlainRoute), "/v1/hooks/aftership", b"not a response")
    assert sent.status_code == 500


def test_the_openapi_operation_is_what_fastapi_documents_for_the_same_declaration():
    plain, usual = _app(PlainRoute).openapi(), _app().openapi()
    assert plain == usual
    operation = plain["paths"]["/v1/hooks/{provider}"]["post"]
    assert {p["name"] for p in operation["parameters"]} == {"provider", "X-Signature"}


def _declare(endpoint: Any) -> None:
    APIRouter(route_class=PlainRoute).add_api_route(
        "/x/{name}", endpoint, methods=["POST"], response_model=None
    )


async def _one() -> int:
    return 1


def not_a_coroutine(request: Request, name: str) -> Response:
    return Response()


async def with_query(request: Request, name: str, page: int = 1) -> Response:
    return Response()


async def with_body(request: Request, name: str, ack: Ack) -> Response:
    return Response()


async def with_dependency(
    request: Request, name: str, n: Annotated[int, Depends(_one)]
) -> Response:
    return Response()


async def without_request(name: str) -> Response:
    return Response()


async def with_typed_path(request: Request, name: int) -> Response:
    return Response()


async def with_required_header(
    request: Request, name: str, sig: Annotated[str, Header(alias="X-Sig")]
) -> Response:
    return Response()


async def with_header_choices(
    request: Request,
    name: str,
    sig: str | None = Header(default=None, validation_alias=AliasChoices("X-Sig", "X-S")),
) -> Response:
    return Response()


async def test_a_header_without_alias_is_read_by_fastapis_name_for_it():
    router = APIRouter(route_class=PlainRoute)

    @router.post("/x/{name}", response_model=None)
    async def hook(
        request: Request, name: str, x_sig: str | None = Header(default=None)
    ) -> Response:
        return JSONResponse({"name": name, "x_sig": x_sig})

    app = FastAPI()
    app.include_router(router)
    sent = await _post(app, "/x/a_b", b"", **{"X-Sig": "s"})
    assert sent.json() == {"name": "a_b", "x_sig": "s"}


@pytest.mark.parametrize(
    ("endpoint", "refusal"),
    [
        (not_a_coroutine, "is a coroutine function"),
        (with_query, "takes no query parameters"),
        (with_body, "takes no body"),
        (with_dependency, "takes no dependencies"),
        (without_request, "takes the Request"),
        (with_typed_path, "is read as str"),
        (with_required_header, "is optional"),
        (with_header_choices, "has one name"),
    ],
)
def test_endpoints_that_need_fastapis_handler_are_refused_at_declaration(endpoint, refusal):
    with pytest.raises(TypeError, match=refusal):
        _declare(endpoint)


async def test_dependencies_added_where_the_router_is_included_are_refused():
    # FastAPI 0.165 builds an included route's handler when the route is first
    # matched, with the including router's dependencies: refused there, not skipped.
    router = APIRouter(route_class=PlainRoute)

    @router.post("/x/{name}", response_model=None)
    async def hook(request: Request, name: str) -> Response:
        return Response()

    app = FastAPI()
    app.include_router(router, dependencies=[Depends(_one)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(TypeError, match="takes no dependencies"):
            await client.post("/x/a")
