"""The JSON routes: workflows, and instances (start, get, list, steps, cancel, signal, resume).

Every error is a ``4xx`` with ``{"detail": ...}`` naming the problem (``422``:
a list of the failing fields, as pydantic reports them). Bodies are JSON only:
nothing that arrives is ever unpickled.
"""

from __future__ import annotations

import json
from urllib.parse import quote
from typing import Any

import pydantic
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response

from .._model.ids import check_instance_id
from .._model.records import InstanceStatus
from ..client import AsyncClient
from ..errors import Deduplicated, DurableError, InstanceNotFound, QueueNotFound, SerializationError, WorkflowNotFound
from ._catalog import Catalog, Entry
from ._json import instance_json, ordered, step_json

__all__ = ["JSONResponse", "Routes", "error"]

#: the most instances one page of the list returns
PAGE_LIMIT = 500


class JSONResponse(_StarletteJSON):
    """JSON as ASCII: a string from the request that holds a lone surrogate still goes out (escaped)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error(status: int, detail: Any) -> JSONResponse:
    """A ``{"detail": ...}`` response."""
    return JSONResponse({"detail": detail}, status_code=status)


class _Refused(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        self.response = error(status, detail)


class StartBody(pydantic.BaseModel):
    """The body of ``POST /api/workflows/{name}/instances``."""

    model_config = pydantic.ConfigDict(extra="forbid")

    input: Any = None
    id: str | None = pydantic.Field(default=None, min_length=1, max_length=200, pattern=r"^[^/\x00-\x1f\x7f]+$",
                                    description="the instance's id (no '/' or control characters); default: a new "
                                                "UUIDv7")
    queue: str | None = pydantic.Field(default=None, min_length=1, max_length=200)
    priority: int = pydantic.Field(default=0, ge=-(2**31), le=2**31 - 1)
    dedup_id: str | None = pydantic.Field(default=None, min_length=1, max_length=200)
    delay: float | None = pydantic.Field(default=None, ge=0, le=10 * 365 * 86400)


class SignalBody(pydantic.BaseModel):
    """The body of ``POST /api/instances/{id}/signal``."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1, max_length=200)
    payload: Any = None


async def _json_body(request: Request, *, required: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise _Refused(422, [{"loc": ["body"], "msg": "a JSON body is required", "type": "missing"}])
        return None
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise _Refused(400, f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _errors(exc: pydantic.ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)]


def _instance_id(request: Request) -> str:
    value: str = request.path_params["instance_id"]
    try:
        return check_instance_id(value)
    except (ValueError, TypeError) as exc:
        raise _Refused(404, f"no instance {value!r}: {exc}") from None


def _durable_error(exc: DurableError) -> JSONResponse:
    if isinstance(exc, InstanceNotFound):
        return error(404, f"no instance {exc.instance_id!r}")
    if isinstance(exc, WorkflowNotFound):
        return error(404, str(exc))
    if isinstance(exc, QueueNotFound):
        return error(422, [{"loc": ["body", "queue"], "msg": str(exc), "type": "queue_not_found"}])
    if isinstance(exc, Deduplicated):
        return JSONResponse({"detail": str(exc), "existing_id": exc.existing_id}, status_code=409)
    if isinstance(exc, SerializationError):
        return error(422, [{"loc": ["body", "input"], "msg": str(exc), "type": "serialization"}])
    return error(409, str(exc))


class Routes:
    """The JSON endpoints, over one client and one catalog."""

    def __init__(self, client: AsyncClient, catalog: Catalog) -> None:
        self.client = client
        self.catalog = catalog

    async def handle(self, request: Request) -> Response:
        """Dispatch to the endpoint named by the route, turning refusals and durable errors into 4xx."""
        endpoint = getattr(self, request.scope["endpoint_name"])
        try:
            response: Response = await endpoint(request)
            return response
        except _Refused as refused:
            return refused.response
        except DurableError as exc:
            return _durable_error(exc)

    async def _entries(self) -> list[Entry]:
        known = await self.client.workflows()
        return self.catalog.entries(known, {k: q for k, q in known.items() if q is not None})

    # -- workflows --------------------------------------------------------------------------------

    async def list_workflows(self, request: Request) -> Response:
        return JSONResponse({"workflows": [e.info() for e in await self._entries()]})

    async def get_workflow(self, request: Request) -> Response:
        name = request.path_params["name"]
        for entry in await self._entries():
            if entry.name == name:
                return JSONResponse(entry.info())
        return error(404, f"no workflow {name!r}")

    async def start(self, request: Request) -> Response:
        name = request.path_params["name"]
        entry = self.catalog.get(name)
        if entry is None and name not in {e.name for e in await self._entries()}:
            return error(404, f"no workflow {name!r} (GET /api/workflows lists them)")
        try:
            body = StartBody.model_validate(await _json_body(request, required=True))
        except pydantic.ValidationError as exc:
            return error(422, _errors(exc, ("body",)))
        try:
            args, kwargs = entry.call(body.input) if entry is not None else Entry(name, None).call(body.input)
        except pydantic.ValidationError as exc:
            return error(422, _errors(exc, ("body", "input")))
        target: Any = entry.workflow if entry is not None else name
        try:
            instance_id = await self.client.start(target, *args, id=body.id, queue=body.queue,
                                                  priority=body.priority, dedup_id=body.dedup_id, delay=body.delay,
                                                  if_exists="error", **kwargs)
        except (TypeError, ValueError) as exc:
            return error(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])
        return JSONResponse({"id": instance_id, "workflow": name}, status_code=201,
                            headers={"Location": f"{request.scope.get('root_path', '')}/api/instances/"
                                                 f"{quote(instance_id, safe='')}"})

    # -- instances --------------------------------------------------------------------------------

    async def list_instances(self, request: Request) -> Response:
        q = request.query_params
        unknown = sorted(set(q) - {"workflow", "status", "queue", "parent", "limit", "cursor"})
        if unknown:
            return error(422, [{"loc": ["query", k], "msg": "unknown parameter", "type": "extra_forbidden"}
                               for k in unknown])
        status = q.get("status")
        if status is not None and status not in {s.value for s in InstanceStatus}:
            return error(422, [{"loc": ["query", "status"], "type": "enum",
                                "msg": f"status must be one of {', '.join(s.value for s in InstanceStatus)}"}])
        try:
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= PAGE_LIMIT:
                raise ValueError
        except ValueError:
            return error(422, [{"loc": ["query", "limit"], "type": "int_range",
                                "msg": f"limit must be an integer from 1 to {PAGE_LIMIT}"}])
        try:
            page = await self.client.list(workflow=q.get("workflow"), status=status, queue=q.get("queue"),
                                          parent=q.get("parent"), limit=limit, cursor=q.get("cursor"))
        except ValueError as exc:
            return error(422, [{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}])
        out = []
        for inst in page.instances:
            if not inst.finished:  # its progress and step: from its checkpoints (a finished one needs none)
                inst = await self.client.get(inst.id) or inst
            out.append(instance_json(inst, total_steps=self._total_steps(inst.workflow_name)))
        return JSONResponse({"instances": out, "next_cursor": page.next_cursor})

    def _total_steps(self, workflow: str) -> int | None:
        entry = self.catalog.get(workflow)
        return entry.total_steps if entry is not None else None

    async def get_instance(self, request: Request) -> Response:
        instance_id = _instance_id(request)
        inst = await self.client.get(instance_id)
        if inst is None:
            return error(404, f"no instance {instance_id!r}")
        return JSONResponse(instance_json(inst, detail=True, total_steps=self._total_steps(inst.workflow_name)))

    async def steps(self, request: Request) -> Response:
        instance_id = _instance_id(request)
        inst = await self.client.get(instance_id)
        if inst is None:
            return error(404, f"no instance {instance_id!r}")
        return JSONResponse({"steps": [step_json(s) for s in ordered(inst.step_results)]})

    async def cancel(self, request: Request) -> Response:
        instance_id = _instance_id(request)
        await _json_body(request, required=False)
        if await self.client.get(instance_id) is None:
            return error(404, f"no instance {instance_id!r}")
        return JSONResponse({"cancelled": await self.client.cancel(instance_id)})

    async def resume(self, request: Request) -> Response:
        instance_id = _instance_id(request)
        await _json_body(request, required=False)
        return JSONResponse({"resumed": await self.client.resume(instance_id)})

    async def signal(self, request: Request) -> Response:
        instance_id = _instance_id(request)
        try:
            body = SignalBody.model_validate(await _json_body(request, required=True))
        except pydantic.ValidationError as exc:
            return error(422, _errors(exc, ("body",)))
        try:
            seq = await self.client.signal(instance_id, body.name, body.payload)
        except (TypeError, ValueError) as exc:
            return error(422, [{"loc": ["body", "name"], "msg": str(exc), "type": "value_error"}])
        return JSONResponse({"seq": seq}, status_code=202)

