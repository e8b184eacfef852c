"""The committed spec is what the app serves."""

from __future__ import annotations

from pathlib import Path

from app.cli import openapi_json

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_served_one():
    assert SPEC.read_text() == openapi_json(), (
        "openapi/openapi.json is stale: run `marketplace openapi --output openapi/openapi.json`"
    )


async def test_served_spec_is_the_same_document(client):
    import json

    served = (await client.get("/openapi.json")).json()
    assert served == json.loads(SPEC.read_text())
