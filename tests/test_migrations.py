"""README "Migrations", step by step with real Alembic (its async template) on a real SQLite file:
autogenerate turns a rename into drop + add (the data would go), a hand-written
``op.alter_column(..., new_column_name=...)`` keeps every row; and the upgrade hook for JSON states."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import model_validator

from starmodel_asgi import Entity, StarModel
from starmodel_asgi.stores.sql import metadata_for

pytestmark = pytest.mark.anyio


class ArticleV1(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "article"}
    title: str = ""


class ArticleV2(Entity):  # title renamed to headline
    model_config = {"scope": "record", "store": "sql", "name": "article"}
    headline: str = ""


def alembic_project(tmp_path: Path, url: str) -> Any:
    """``alembic init -t async migrations``, and env.py pointed at ``metadata_for`` (README)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(tmp_path / "alembic.ini"))
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    command.init(config, str(tmp_path / "migrations"), template="async")
    env = tmp_path / "migrations" / "env.py"
    text = env.read_text()
    assert "async_engine_from_config" in text  # the async template: asyncpg/aiosqlite URLs work as they are
    text = text.replace("target_metadata = None", "target_metadata = config.attributes['metadata']")
    # the template's fileConfig() would disable the loggers already made (starmodel_asgi's too)
    text = text.replace(
        "fileConfig(config.config_file_name)", "fileConfig(config.config_file_name, disable_existing_loggers=False)"
    )
    env.write_text(text)
    config.attributes["metadata"] = metadata_for([ArticleV2])
    return config


def newest(tmp_path: Path, slug: str) -> Path:
    (script,) = (tmp_path / "migrations" / "versions").glob(f"*_{slug}.py")
    return script


async def test_a_rename_written_as_alter_column_keeps_the_data_where_autogenerate_drops_it(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    before = StarModel([ArticleV1], secret_key="k", database_url=url)
    for n, title in enumerate(("Hello", "World")):
        await before.create(ArticleV1, id=f"a{n}", title=title)
    await before.aclose()

    config = alembic_project(tmp_path, url)
    # the async template runs asyncio.run(): Alembic runs in a thread of its own, as in its own process
    await anyio.to_thread.run_sync(lambda: command.revision(config, message="rename title", autogenerate=True))
    generated = newest(tmp_path, "rename_title")
    source = generated.read_text()
    # what the README warns about: autogenerate cannot tell a rename, it drops the old column
    assert "op.add_column('starmodel_article', sa.Column('headline'" in source
    assert "op.drop_column('starmodel_article', 'title')" in source

    # the fix, by hand: the same revision, its upgrade and downgrade as renames
    upgrade = "    op.alter_column('starmodel_article', 'title', new_column_name='headline')\n"
    downgrade = "    op.alter_column('starmodel_article', 'headline', new_column_name='title')\n"
    source = re.sub(r"(def upgrade\(\) -> None:\n)(.*?)(\n\ndef downgrade)", rf"\1{upgrade}\3", source, flags=re.S)
    source = re.sub(r"(def downgrade\(\) -> None:\n)(.*)", rf"\1{downgrade}", source, flags=re.S)
    assert "drop_column" not in source
    generated.write_text(source)
    await anyio.to_thread.run_sync(command.upgrade, config, "head")

    after = StarModel([ArticleV2], secret_key="k", database_url=url, schema="check")
    assert [a.headline for a in await after.list(ArticleV2)] == ["Hello", "World"]  # every row kept
    await after.aclose()


class Prefs(Entity):  # README "Migrations": the upgrade hook
    model_config = {"scope": "global", "name": "prefs"}
    tags: list[str] = []  # was `tags: str = ""`, comma-separated
    theme: str = "light"  # was `dark: bool`

    @model_validator(mode="before")
    @classmethod
    def upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("tags"), str):
                data["tags"] = [tag for tag in data["tags"].split(",") if tag]
            if "dark" in data:
                data["theme"] = "dark" if data.pop("dark") else "light"
        return data


async def test_the_readme_upgrade_hook_reads_old_states_and_leaves_new_ones_alone() -> None:
    sm = StarModel([Prefs], secret_key="k")
    spec = sm.spec(Prefs)
    async with sm.store_for(spec).hold(spec, "global") as slot:  # a state saved by the old release
        await slot.save(text='{"id": "global", "tags": "news,sport", "dark": true}')
    prefs = await sm.get(Prefs)
    assert (prefs.tags, prefs.theme) == (["news", "sport"], "dark")
    async with sm.edit(Prefs) as edited:
        edited.tags.append("tech")
    assert (await sm.get(Prefs)).model_dump() == {"id": "global", "tags": ["news", "sport", "tech"], "theme": "dark"}
    await sm.aclose()
