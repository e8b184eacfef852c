"""Every setting is documented in the README's configuration table."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    missing = []
    for name, field in Settings.model_fields.items():
        env = "DATABASE_URL" if name == "database_url" else f"MARKETPLACE_{name.upper()}"
        if f"`{env}`" not in text:
            missing.append(env)
        assert field.description, f"{name} has no description"
    assert not missing, f"settings missing from README: {missing}"


def test_fastapis_native_telemetry_follows_its_setting():
    # FastAPI keeps its telemetry configuration privately; nothing public reads it back.
    from app.main import create_app
    from app.settings import Settings

    url = "postgresql+asyncpg://nobody@127.0.0.1:1/none"  # the engine never connects here
    for on in (False, True):
        app = create_app(Settings(database_url=url, otel_telemetry=on))
        config = app._telemetry
        assert (config["tracing"], config["metrics"], config["logs"]) == (on, on, on)
