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
