"""Export jobs: assessment tables as CSV, XLSX and JSON Lines, pseudonymous unless names are
asked for (audited), with progress, a manifest and a download."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from sqlalchemy import delete, func, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.assessment.households import COLUMNS
from services.audit.models import AuditEvent
from services.exports import jobs as export_jobs
from services.exports import runner, writers
from services.exports.models import Export, ExportStatus
from services.exports.pseudonyms import pseudonym, pseudonym_sql
from services.exports.sources import neutralised
from services.jobs.models import Job
from services.jobs.service import Worker, enqueue, load_handlers, unfinished
from services.regions.models import Region
from services.users.models import Role
from tests.assessment_helpers import THIS_YEAR, add_income, household_rows, set_thresholds
from tests.committed import CommittingUsers, committed_app
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product

PSEUDONYMOUS = [
    "household_pseudonym",
    *(c for c in COLUMNS if c not in ("household_id", "head_name")),
]


# --- helpers --------------------------------------------------------------------------------


async def ask(
    client: httpx.AsyncClient, users: Any, region: str, *, actor: Any = None, **body: Any
) -> httpx.Response:
    actor = actor or await users.make(Role.officer)
    return await client.post(
        "/v1/exports",
        json={"table": "household_year", "format": "csv", "region": region, "year": THIS_YEAR}
        | body,
        headers=users.auth(actor),
    )


async def run_jobs(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    worker = Worker(sessionmaker, load_handlers(), concurrency=1, name="exports-test")
    while await worker.run_once():
        pass


async def exported(
    client: httpx.AsyncClient,
    users: Any,
    sessionmaker: async_sessionmaker[AsyncSession],
    region: str,
    *,
    actor: Any = None,
    **body: Any,
) -> tuple[dict[str, Any], httpx.Response]:
    """Ask for an export, run the jobs, and answer the export and its download."""
    actor = actor or await users.make(Role.officer)
    response = await ask(client, users, region, actor=actor, **body)
    assert response.status_code == 202, response.text
    await run_jobs(sessionmaker)
    export = await client.get(response.headers["Location"], headers=users.auth(actor))
    assert export.status_code == 200, export.text
    assert export.json()["status"] == "done", export.json()
    download = await client.get(
        f"/v1/exports/{export.json()['id']}/download", headers=users.auth(actor)
    )
    assert download.status_code == 200, download.text
    return export.json(), download


async def assessment_rows(
    client: httpx.AsyncClient, users: Any, region: str
) -> list[dict[str, Any]]:
    """Every household-year row of the region as the API answers them, all pages walked."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        response = await household_rows(client, users, region, **params)
        assert response.status_code == 200, response.text
        rows += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return rows


def pseudonymous(row: dict[str, Any], key: bytes) -> dict[str, Any]:
    """An API row as a pseudonymous export shows it."""
    out = {c: v for c, v in row.items() if c not in ("household_id", "head_name")}
    return {"household_pseudonym": pseudonym(key, uuid.UUID(row["household_id"])), **out}


def as_text(value: Any) -> str:
    """A JSON value as the CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(value)
    return str(value)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))


@pytest.fixture
def key(app) -> bytes:
    secret: bytes = app.state.settings.export_pseudonym_secret
    return secret


@pytest.fixture
async def county(client, users, world, session) -> str:
    """Three households of the county, in two villages, with different incomes."""
    await set_thresholds(client, users, line=100)
    first = await world.household(head="李春花", size=2)
    second = await world.household(world.county.village2, head="赵秋实", size=4)
    await world.household(head="钱冬梅", size=1)
    await add_income(client, users, first, 30_000)
    await add_income(client, users, second, 8_000, kind="production_cost")
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [(second, 6_000)])
    order = await delivered_cod_order(client, users, [(product, 3)])
    assert await recognise(session, order) == 1
    return world.county.county


# --- the household-year table ---------------------------------------------------------------


async def test_csv_rows_are_the_assessment_rows_with_pseudonyms_and_without_names(
    client, users, sessionmaker, county, key
) -> None:
    _, download = await exported(client, users, sessionmaker, county)
    rows = csv_rows(download.content)
    assert list(rows[0]) == PSEUDONYMOUS
    expected = [pseudonymous(row, key) for row in await assessment_rows(client, users, county)]
    assert len(expected) == 3
    assert rows == [{c: as_text(v) for c, v in row.items()} for row in expected]


async def test_the_byte_order_mark_starts_a_csv_only_when_asked(
    client, users, sessionmaker, county
) -> None:
    _, plain = await exported(client, users, sessionmaker, county)
    _, marked = await exported(client, users, sessionmaker, county, bom=True)
    assert plain.content.startswith(b"household_pseudonym,")
    assert marked.content.startswith(b"\xef\xbb\xbfhousehold_pseudonym,")
    assert marked.content[3:] == plain.content


async def test_a_byte_order_mark_is_refused_outside_csv(client, users, county) -> None:
    response = await ask(client, users, county, format="jsonl", bom=True)
    assert response.status_code == 422
    assert response.json()["field"] == "bom"


async def test_pseudonyms_are_stable_keyed_hashes_and_never_the_household_id(
    client, users, sessionmaker, county, key
) -> None:
    _, first = await exported(client, users, sessionmaker, county)
    _, second = await exported(client, users, sessionmaker, county, format="jsonl")
    ids = [row["household_id"] for row in await assessment_rows(client, users, county)]
    from_csv = [row["household_pseudonym"] for row in csv_rows(first.content)]
    from_jsonl = [json.loads(line)["household_pseudonym"] for line in second.text.splitlines()]
    assert from_csv == from_jsonl
    assert from_csv == [hmac.new(key, i.encode(), hashlib.sha256).hexdigest()[:20] for i in ids]
    assert not any(i in first.text or i in second.text for i in ids)


@pytest.mark.parametrize("key", [b"k", b"export-key-of-this-test", bytes(range(256)) * 2])
async def test_the_sql_pseudonym_is_pythons_hmac_sha256(session, key) -> None:
    household_id = uuid.uuid4()
    computed = await session.scalar(select(pseudonym_sql(literal(household_id), key)))
    assert computed == hmac.new(key, str(household_id).encode(), hashlib.sha256).hexdigest()[:20]


async def test_jsonl_lines_are_the_assessment_rows(
    client, users, sessionmaker, county, key
) -> None:
    export, download = await exported(client, users, sessionmaker, county, format="jsonl")
    lines = [json.loads(line) for line in download.text.splitlines()]
    expected = [pseudonymous(row, key) for row in await assessment_rows(client, users, county)]
    assert lines == expected
    assert download.headers["content-type"] == "application/jsonl"
    assert export["manifest"]["file_name"].endswith(".jsonl")


async def test_xlsx_reads_back_with_the_same_rows(client, users, sessionmaker, county, key) -> None:
    _, download = await exported(client, users, sessionmaker, county, format="xlsx")
    workbook = openpyxl.load_workbook(io.BytesIO(download.content), read_only=True)
    [sheet] = workbook.worksheets
    header, *cells = list(sheet.iter_rows(values_only=True))
    assert list(header) == PSEUDONYMOUS
    expected = [pseudonymous(row, key) for row in await assessment_rows(client, users, county)]
    spreadsheet = [
        {c: (";".join(v) if isinstance(v, list) else v) for c, v in row.items()} for row in expected
    ]
    assert [dict(zip(header, row, strict=True)) for row in cells] == spreadsheet


async def test_xlsx_rows_beyond_a_sheet_go_on_further_sheets(session, tmp_path) -> None:
    result = await session.stream(text("SELECT n, n % 2 = 0 AS even FROM generate_series(1, 5) n"))

    async def ignore(rows: int) -> None:
        pass

    written = await writers.write_xlsx(
        result,
        ["n", "even"],
        tmp_path / "five.xlsx",
        title="numbers",
        batch=2,
        progress=ignore,
        sheet_rows=2,
    )
    assert written.rows == 5
    workbook = openpyxl.load_workbook(tmp_path / "five.xlsx", read_only=True)
    assert workbook.sheetnames == ["numbers", "numbers 2", "numbers 3"]
    sheets = [list(s.iter_rows(values_only=True)) for s in workbook.worksheets]
    assert [rows[0] for rows in sheets] == [("n", "even")] * 3
    assert [r for rows in sheets for r in rows[1:]] == [
        (1, False),
        (2, True),
        (3, False),
        (4, True),
        (5, False),
    ]


# --- names, access, audit -------------------------------------------------------------------


async def test_an_officer_of_the_county_exports_names_and_the_request_is_audited(
    client, users, sessionmaker, session, county
) -> None:
    officer = await users.make(Role.officer)
    export, download = await exported(
        client, users, sessionmaker, county, actor=officer, include_names=True
    )
    rows = csv_rows(download.content)
    assert list(rows[0]) == list(COLUMNS)
    api = await assessment_rows(client, users, county)
    assert [(r["household_id"], r["head_name"]) for r in rows] == [
        (r["household_id"], r["head_name"]) for r in api
    ]
    assert {r["head_name"] for r in rows} == {"李春花", "赵秋实", "钱冬梅"}
    [audited] = (
        await session.scalars(select(AuditEvent).where(AuditEvent.action == "export.names"))
    ).all()
    assert (audited.actor_id, audited.subject_type, audited.subject_id) == (
        officer.id,
        "export",
        export["id"],
    )
    assert audited.details["region"] == county


async def test_a_pseudonymous_export_is_not_audited(client, users, session, county) -> None:
    response = await ask(client, users, county)
    assert response.status_code == 202
    audited = await session.scalars(select(AuditEvent).where(AuditEvent.action == "export.names"))
    assert audited.all() == []


async def test_admins_cannot_export_names(client, users, session, county) -> None:
    admin = await users.make(Role.admin)
    response = await ask(client, users, county, actor=admin, include_names=True)
    assert response.status_code == 403
    assert response.json()["field"] == "include_names"
    assert (await session.scalars(select(Export))).all() == []


async def test_admins_export_pseudonyms_of_any_region(client, users, county) -> None:
    admin = await users.make(Role.admin)
    response = await ask(client, users, county[:4] + "00000000", actor=admin)
    assert response.status_code == 202, response.text


async def test_officers_of_another_county_cannot_export(client, users, world, county) -> None:
    stranger = await users.make(Role.officer, county_code=world.county.other_county)
    response = await ask(client, users, county, actor=stranger)
    assert response.status_code == 403


async def test_an_export_is_visible_to_its_requester_only(client, users, county) -> None:
    officer = await users.make(Role.officer)
    response = await ask(client, users, county, actor=officer)
    colleague = await users.make(Role.officer)
    admin = await users.make(Role.admin)
    location = response.headers["Location"]
    assert (await client.get(location, headers=users.auth(officer))).status_code == 200
    assert (await client.get(location, headers=users.auth(colleague))).status_code == 404
    assert (await client.get(location, headers=users.auth(admin))).status_code == 200


async def test_admins_do_not_see_an_export_with_names(client, users, county) -> None:
    officer = await users.make(Role.officer)
    response = await ask(client, users, county, actor=officer, include_names=True)
    admin = await users.make(Role.admin)
    shown = await client.get(response.headers["Location"], headers=users.auth(admin))
    assert shown.status_code == 404


async def test_a_year_without_thresholds_is_refused(client, users, county) -> None:
    response = await ask(client, users, county, year=2031)
    assert response.status_code == 422
    assert response.json()["field"] == "year"


async def test_names_are_refused_for_a_table_without_them(client, users, county) -> None:
    response = await ask(client, users, county, table="village", include_names=True)
    assert response.status_code == 422
    assert response.json()["field"] == "include_names"


# --- the job: status, progress, manifest, download ------------------------------------------


async def test_a_new_export_is_queued_and_its_download_is_a_409(client, users, county) -> None:
    officer = await users.make(Role.officer)
    response = await ask(client, users, county, actor=officer)
    assert response.status_code == 202
    body = response.json()
    assert response.headers["Location"] == f"/v1/exports/{body['id']}"
    assert body | {"id": None} == {
        "id": None,
        "table": "household_year",
        "format": "csv",
        "region": county,
        "year": THIS_YEAR,
        "include_names": False,
        "bom": False,
        "status": "queued",
        "rows_written": 0,
        "rows_expected": None,
        "error": None,
        "manifest": None,
    }
    download = await client.get(f"/v1/exports/{body['id']}/download", headers=users.auth(officer))
    assert download.status_code == 409
    assert download.json()["type"] == "/problems/export-not-done"


async def test_the_manifest_describes_the_downloaded_file(
    client, users, sessionmaker, county
) -> None:
    officer = await users.make(Role.officer)
    export, download = await exported(client, users, sessionmaker, county, actor=officer)
    manifest = export["manifest"]
    digest = hashlib.sha256(download.content).hexdigest()
    assert manifest["sha256"] == digest
    assert download.headers["etag"] == f'"{digest}"'
    assert manifest["bytes"] == len(download.content)
    assert manifest["rows"] == 3
    assert manifest["media_type"] == download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="{manifest["file_name"]}"'
    )
    assert manifest["requested_by"] == str(officer.id)
    assert manifest["parameters"] == {
        "table": "household_year",
        "format": "csv",
        "region": county,
        "year": THIS_YEAR,
        "include_names": False,
        "bom": False,
    }
    assert manifest["requested_at"] <= manifest["finished_at"]


async def test_progress_ends_with_every_expected_row_written(
    client, users, sessionmaker, county
) -> None:
    export, _ = await exported(client, users, sessionmaker, county, format="xlsx")
    assert export["rows_expected"] == export["rows_written"] == export["manifest"]["rows"] == 3


async def test_the_village_and_county_tables_export(client, users, sessionmaker, county) -> None:
    _, villages = await exported(client, users, sessionmaker, county, table="village")
    _, counties = await exported(client, users, sessionmaker, county, table="county")
    assert [row["village_code"] for row in csv_rows(villages.content)] == [
        "990102100001",
        "990102100002",
    ]
    [row] = csv_rows(counties.content)
    assert row["county_code"] == county
    assert row["taobao_villages"] == "0"


@pytest.mark.parametrize("format", ["csv", "xlsx", "jsonl"])
async def test_a_job_failing_midway_leaves_no_file_and_runs_again_from_the_start(
    client, users, sessionmaker, session, county, app, monkeypatch, format
) -> None:
    officer = await users.make(Role.officer)
    response = await ask(client, users, county, actor=officer, format=format)
    export_id = uuid.UUID(response.json()["id"])

    async def killed(self: runner.Progress, rows: int) -> None:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(runner.Progress, "__call__", killed)
    await run_jobs(sessionmaker)
    shown = (await client.get(response.headers["Location"], headers=users.auth(officer))).json()
    assert shown["status"] != "done" and shown["manifest"] is None
    exports: Path = app.state.settings.export_path
    assert files_in(exports) == []

    monkeypatch.undo()
    # Past the retry's backoff.
    await session.execute(
        update(Job).where(Job.dedupe_key == str(export_id)).values(run_at=func.now())
    )
    await run_jobs(sessionmaker)
    shown = (await client.get(response.headers["Location"], headers=users.auth(officer))).json()
    assert shown["status"] == "done" and shown["manifest"]["rows"] == 3
    assert files_in(exports) == [shown["manifest"]["file_name"]]


# --- spreadsheets: text people typed never runs as a formula ---------------------------------

FORMULA = '=HYPERLINK("http://x","y")'


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("王=大山", "王=大山"),
        (" =1", " =1"),
        ("", ""),
        (None, None),
    ],
)
async def test_text_that_would_start_a_formula_is_written_behind_a_quote(
    session, value, written
) -> None:
    assert await session.scalar(select(neutralised(literal(value)))) == written


async def test_a_head_name_like_a_formula_is_quoted_in_a_named_csv_and_kept_in_jsonl(
    client, users, sessionmaker, world, county
) -> None:
    officer = await users.make(Role.officer)
    await world.household(head=FORMULA, size=1)
    _, named = await exported(
        client, users, sessionmaker, county, actor=officer, include_names=True
    )
    _, lines = await exported(
        client, users, sessionmaker, county, actor=officer, include_names=True, format="jsonl"
    )
    in_csv = {row["head_name"] for row in csv_rows(named.content)}
    in_jsonl = {json.loads(line)["head_name"] for line in lines.text.splitlines()}
    assert in_csv == {"'" + FORMULA, "李春花", "赵秋实", "钱冬梅"}
    assert in_jsonl == {FORMULA, "李春花", "赵秋实", "钱冬梅"}


async def test_a_head_name_like_a_formula_is_a_text_cell_in_xlsx(
    client, users, sessionmaker, world, county
) -> None:
    officer = await users.make(Role.officer)
    await world.household(head=FORMULA, size=1)
    _, download = await exported(
        client, users, sessionmaker, county, actor=officer, include_names=True, format="xlsx"
    )
    [sheet] = openpyxl.load_workbook(io.BytesIO(download.content)).worksheets
    column = list(COLUMNS).index("head_name") + 1
    [cell] = [c for c in sheet.iter_rows(min_col=column, max_col=column) if c[0].value == FORMULA]
    assert cell[0].data_type == "s"  # a string, not a formula ("f")


async def test_a_region_name_like_a_formula_is_quoted_in_a_village_csv(
    client, users, sessionmaker, session, world, county
) -> None:
    await session.execute(
        update(Region).where(Region.code == world.county.village2).values(name="@SUM(1+1)")
    )
    _, download = await exported(client, users, sessionmaker, county, table="village")
    assert [row["name"] for row in csv_rows(download.content)] == ["上坪村", "'@SUM(1+1)"]


# --- exports whose job ended for good -------------------------------------------------------


async def reap(session: AsyncSession) -> None:
    """Run the periodic task `exports.reap` once, as a worker would."""
    tasks = {task.name: task for task in load_handlers().periodic_tasks}
    await tasks["exports.reap"].task(session)


async def state_of(session: AsyncSession, export_id: uuid.UUID) -> Any:
    return (
        await session.execute(
            select(Export.status, Export.error, Export.finished_at).where(Export.id == export_id)
        )
    ).one()


async def requested(client: httpx.AsyncClient, users: Any, county: str) -> uuid.UUID:
    response = await ask(client, users, county)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


async def half_written(session: AsyncSession, folder: Path, export_id: uuid.UUID) -> Path:
    """What a worker killed mid-export leaves: the export `running`, a half file."""
    await session.execute(
        update(Export).where(Export.id == export_id).values(status=ExportStatus.running)
    )
    work = folder / f".work-{export_id}"
    work.mkdir(parents=True)
    (work / "household_year.csv").write_text("household_pseudonym,county_code\n")
    return work


async def test_an_export_whose_job_failed_for_good_is_failed_and_its_work_folder_removed(
    client, users, session, county, app
) -> None:
    export_id = await requested(client, users, county)
    folder: Path = app.state.settings.export_path
    await half_written(session, folder, export_id)
    (folder / "another-export.csv").write_text("kept\n")
    # What the worker does when the last attempt's worker died: no handler runs.
    await session.execute(
        update(Job)
        .where(Job.dedupe_key == str(export_id))
        .values(failed_at=func.now(), last_error="abandoned")
    )
    await reap(session)
    state = await state_of(session, export_id)
    assert (state.status, state.error) == (ExportStatus.failed, export_jobs.ABANDONED)
    assert state.finished_at is not None
    assert files_in(folder) == ["another-export.csv"]


async def test_a_queued_export_whose_job_is_gone_is_failed(client, users, session, county) -> None:
    export_id = await requested(client, users, county)
    await session.execute(delete(Job).where(Job.dedupe_key == str(export_id)))
    await reap(session)
    state = await state_of(session, export_id)
    assert (state.status, state.error) == (ExportStatus.failed, export_jobs.ABANDONED)


async def test_a_running_export_with_a_live_job_is_left_alone(
    client, users, session, county, app
) -> None:
    export_id = await requested(client, users, county)
    folder: Path = app.state.settings.export_path
    work = await half_written(session, folder, export_id)
    await session.execute(
        update(Job)
        .where(Job.dedupe_key == str(export_id))
        .values(attempts=1, locked_by="a live worker", locked_until=func.now() + text("'5 min'"))
    )
    await reap(session)
    state = await state_of(session, export_id)
    assert (state.status, state.error, state.finished_at) == (ExportStatus.running, None, None)
    assert files_in(work) == ["household_year.csv"]


async def test_a_done_export_is_left_alone_once_its_job_is_gone(
    client, users, sessionmaker, session, county, app
) -> None:
    export, _ = await exported(client, users, sessionmaker, county)
    export_id = uuid.UUID(export["id"])
    await session.execute(delete(Job).where(Job.dedupe_key == str(export_id)))
    await reap(session)
    state = await state_of(session, export_id)
    assert (state.status, state.error) == (ExportStatus.done, None)
    assert files_in(app.state.settings.export_path) == [export["manifest"]["file_name"]]


async def test_a_sweep_ends_a_bounded_batch_of_exports_oldest_first(
    client, users, session, county, monkeypatch
) -> None:
    first = await requested(client, users, county)
    second = await requested(client, users, county)
    await session.execute(
        update(Export).where(Export.id == second).values(created_at=func.now() + text("'1 s'"))
    )
    await session.execute(delete(Job).where(Job.kind == "exports.run"))
    monkeypatch.setattr(export_jobs, "REAP_BATCH", 1)
    await reap(session)
    assert [(await state_of(session, e)).status for e in (first, second)] == [
        ExportStatus.failed,
        ExportStatus.queued,
    ]
    await reap(session)
    assert (await state_of(session, second)).status is ExportStatus.failed


async def test_a_job_is_unfinished_until_it_finishes_or_fails(session) -> None:
    kind = "tests.unfinished"
    for key in ("pending", "running", "finished", "failed"):
        assert await enqueue(session, kind, {}, dedupe_key=key) is not None
    await enqueue(session, "tests.another_kind", {}, dedupe_key="of-another-kind")
    ended = {"running": {"attempts": 1, "locked_by": "w", "locked_until": func.now()}}
    ended |= {"finished": {"finished_at": func.now()}, "failed": {"failed_at": func.now()}}
    for key, values in ended.items():
        await session.execute(
            update(Job).where(Job.kind == kind, Job.dedupe_key == key).values(**values)
        )
    keys = ["pending", "running", "finished", "failed", "missing", "of-another-kind"]
    answers = [await session.scalar(select(unfinished(kind, literal(key)))) for key in keys]
    assert answers == [True, True, False, False, False, False]


# --- on a database where transactions really commit -----------------------------------------


@pytest.fixture
async def live(server_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """An app on a database of its own, so that progress written aside can be seen."""
    async with (
        committed_app(server_url, tmp_path, prefix="marketplace_exports") as own,
        own.app.state.sessionmaker() as session,
    ):
        users = CommittingUsers(session, own.settings)
        world = await users.builder()
        for head in ("孙一", "孙二", "孙三", "孙四", "孙五"):
            await world.household(head=head)
        await session.commit()
        await set_thresholds(own.client, users)
        officer = await users.make(Role.officer)
        yield {
            "app": own.app,
            "client": own.client,
            "users": users,
            "officer": officer,
            "county": world.county.county,
            "factory": own.app.state.sessionmaker,
        }


async def _live_export(live: dict[str, Any], **body: Any) -> uuid.UUID:
    response = await ask(
        live["client"], live["users"], live["county"], actor=live["officer"], **body
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


async def _seen_from_outside(live: dict[str, Any], export_id: uuid.UUID) -> Export:
    async with live["factory"]() as session:
        export = await session.get(Export, export_id)
        assert export is not None
        return export


def _config(live: dict[str, Any], **options: Any) -> runner.ExportConfig:
    settings = live["app"].state.settings
    return runner.ExportConfig(
        settings.export_path, lambda: settings.export_pseudonym_secret, **options
    )


async def test_progress_is_seen_by_others_while_the_job_is_still_running(live) -> None:
    export_id = await _live_export(live, format="jsonl")
    async with live["factory"]() as session, session.begin():
        await runner.run_export(session, _config(live, progress_every=1, batch_rows=2), export_id)
        # The job's transaction is still open: what others see was written aside.
        during = await _seen_from_outside(live, export_id)
        assert (during.status, during.rows_expected, during.rows_written) == (
            ExportStatus.running,
            5,
            5,
        )
        assert during.started_at is not None and during.sha256 is None
    after = await _seen_from_outside(live, export_id)
    assert (after.status, after.rows_expected, after.rows_written) == (ExportStatus.done, 5, 5)
    assert after.sha256 is not None


async def test_a_failed_attempt_is_queued_again_and_the_retry_completes(live, monkeypatch) -> None:
    export_id = await _live_export(live, format="xlsx")
    worker = Worker(live["factory"], load_handlers(), concurrency=1, name="exports-live")

    async def killed(self: runner.Progress, rows: int) -> None:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(runner.Progress, "__call__", killed)
    await worker.run_once()
    failed = await _seen_from_outside(live, export_id)
    assert (failed.status, failed.sha256, failed.file_name) == (ExportStatus.queued, None, None)
    assert failed.error == "RuntimeError: worker killed"
    folder: Path = live["app"].state.settings.export_path
    assert files_in(folder) == []

    monkeypatch.undo()
    async with live["factory"]() as session, session.begin():
        await session.execute(
            update(Job).where(Job.dedupe_key == str(export_id)).values(run_at=func.now())
        )
    await worker.run_once()
    done = await _seen_from_outside(live, export_id)
    assert (done.status, done.rows_written, done.error) == (ExportStatus.done, 5, None)
    assert files_in(folder) == [done.file_name]


async def test_the_last_failed_attempt_marks_the_export_failed(live, monkeypatch) -> None:
    export_id = await _live_export(live)
    async with live["factory"]() as session, session.begin():
        await session.execute(
            update(Job).where(Job.dedupe_key == str(export_id)).values(max_attempts=1)
        )

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(writers, "write_csv", broken)
    await Worker(live["factory"], load_handlers(), concurrency=1).run_once()
    failed = await _seen_from_outside(live, export_id)
    assert (failed.status, failed.error) == (ExportStatus.failed, "OSError: disk full")
