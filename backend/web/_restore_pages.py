"""Restore to a machine, on a backup's page: the form (paths or everything, a machine found by a
search field, a folder, keep both or replace) and the backup's restores with their status."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from backend.api.deps import ServicesDep
from backend.errors import DomainError
from backend.restore_job_schemas import MAX_PATHS, RestoreJobRequest
from backend.services import CurrentUser, Services
from backend.web._auth import PageController, PageUserDep
from backend.web._config_pages import agent_names
from backend.web._forms import field_errors, text
from backend.web._render import page, redirect

__all__ = ["RestorePages", "restore_context"]


async def restore_context(
    services: Services, user: CurrentUser, backup_id: str, status: str
) -> dict[str, Any]:
    """What the backup page's restore section shows: the backup's restores, and the machines
    that may restore it (those the machine search offers) when it is completed."""
    machines = (
        await services.restore_jobs.machines(user, backup_id) if status == "completed" else []
    )
    return {
        "restores": await services.restore_jobs.for_backup(user, backup_id),
        "machines": machines,
    }


def _pick(machines: list[dict[str, str]], typed: str) -> tuple[str | None, str | None]:
    """The machine the search field names (its whole name, any case, or its id); or the error."""
    wanted = typed.strip()
    if not wanted:
        return None, "Type the name of the machine to restore to."
    exact = [m for m in machines if wanted.lower() in (m["name"].lower(), m["id"])]
    if len(exact) == 1:
        return exact[0]["id"], None
    partial = [m for m in machines if wanted.lower() in m["name"].lower()]
    if len(exact) > 1 or len(partial) > 1:
        return None, "Several machines match: type the whole name."
    if len(partial) == 1:
        return partial[0]["id"], None
    return None, (
        f"No machine called “{wanted}” can restore this backup: for now only the machine that "
        "made it can."
    )


class RestorePages(PageController):
    path = "/backups"

    @post("/{backup_id:str}/restore", status_code=303)
    async def restore(
        self,
        request: Request[Any, Any, Any],
        backup_id: FromPath[str],
        user: PageUserDep,
        services: ServicesDep,
    ) -> Template | Redirect:
        backup = await services.history.get(user, backup_id)
        form = await request.form()
        values = {
            "machine": text(form, "machine", 1000).strip(),
            "paths": text(form, "paths", 100_000),
            "everything": "1" if text(form, "everything", 10) else "",
            "target": text(form, "target", 5000).strip(),
            "conflict": text(form, "conflict", 20) or "keep-both",
        }
        errors: dict[str, str] = {}
        context = await restore_context(services, user, backup.id, backup.status)
        agent_id, problem = _pick(context["machines"], values["machine"])
        if problem:
            errors["machine"] = problem
        paths = (
            []
            if values["everything"]
            else [line.strip() for line in values["paths"].splitlines() if line.strip()]
        )
        if not values["everything"] and not paths:
            errors["paths"] = "Type the paths to restore, one a line, or tick Everything."
        elif len(paths) > MAX_PATHS:
            errors["paths"] = f"At most {MAX_PATHS} paths."
        if not values["target"]:
            errors["target"] = "Type the folder on that machine to restore into."
        if values["conflict"] not in ("keep-both", "overwrite"):
            errors["conflict"] = "Choose what happens to files that are already there."
        if not errors and agent_id is not None:
            try:
                data = msgspec.convert(
                    {
                        "agentId": agent_id,
                        "paths": paths,
                        "target": values["target"],
                        "conflict": values["conflict"],
                    },
                    RestoreJobRequest,
                )
                job = await services.restore_jobs.request(user, backup.id, data)
            except msgspec.ValidationError as exc:
                errors["paths"] = f"Not a valid restore: {exc}"
            except DomainError as exc:
                if exc.status_code == 404 and exc.field != "agentId":
                    raise
                field = {"agentId": "machine"}.get(exc.field or "", exc.field or "form")
                errors = {field: field_errors(exc, field).popitem()[1]}
            else:
                where = "now" if job.status == "running" else "as soon as it is online"
                return redirect(
                    f"/backups/{backup.id}#restores",
                    services,
                    flash=f"Restore asked of “{job.agent_name}”: it starts {where}.",
                )
        return page(
            request,
            "backup.html",
            user=user,
            services=services,
            status_code=400,
            nav="backups",
            backup=backup,
            agent_names=await agent_names(services, user, [backup.agent_id]),
            values=values,
            errors=errors,
            **context,
        )
