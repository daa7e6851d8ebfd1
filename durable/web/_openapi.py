"""The API's OpenAPI 3.1 document, built from the routes and the workflows' input models."""

from __future__ import annotations

from typing import Any

import pydantic

from .._model.records import InstanceStatus
from .._version import __version__
from ._catalog import Entry
from ._routes import PAGE_LIMIT, SignalBody, StartBody

__all__ = ["openapi"]

_REF = "#/components/schemas/{model}"


def _schema(model: type[pydantic.BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    return schema


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


_ID = {"name": "instance_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_SSE = {"description": "a stream of Server-Sent Events (`id:`, `event:` the event's name, `data:` its JSON)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}
_LAST = {"name": "Last-Event-ID", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": "^[0-9]+$"}, "description": "go on after this event id"}


def _start_operation(entry: Entry | None, components: dict[str, Any]) -> dict[str, Any]:
    body = _schema(StartBody, components)
    if entry is not None:
        body["properties"]["input"] = entry.input_schema() or {}
        if entry.model is not None:
            body["required"] = ["input"]
    return {
        "summary": f"Start an instance of {entry.name}" if entry is not None else "Start an instance of a workflow",
        "operationId": f"start_{entry.name}" if entry is not None else "start",
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"201": _json("the instance is stored, for a worker to run"),
                      "404": _error("no such workflow"), "409": _error("the id or dedup id is taken"),
                      "422": _error("the input does not fit the workflow's parameters (the failing fields)")},
    }


def openapi(entries: list[Entry]) -> dict[str, Any]:
    """The document: every route, and one start operation per workflow whose code the API has."""
    components: dict[str, Any] = {
        "Error": {"type": "object", "properties": {"detail": {}}, "required": ["detail"]},
    }
    paths: dict[str, Any] = {
        "/api/workflows": {"get": {"summary": "The workflows, with their graphs (JSON and Mermaid)",
                                   "operationId": "list_workflows", "responses": {"200": _json("the workflows")}}},
        "/api/workflows/{name}": {"get": {
            "summary": "One workflow", "operationId": "get_workflow",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json("the workflow"), "404": _error("no such workflow")}}},
        "/api/workflows/{name}/instances": {"post": {
            **_start_operation(None, components),
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]}},
        "/api/instances": {"get": {
            "summary": "Instances, oldest first, a page at a time", "operationId": "list_instances",
            "parameters": [
                {"name": "workflow", "in": "query", "schema": {"type": "string"}},
                {"name": "status", "in": "query", "schema": {"enum": [s.value for s in InstanceStatus]}},
                {"name": "queue", "in": "query", "schema": {"type": "string"}},
                {"name": "parent", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"},
                 "description": "a page's next_cursor"}],
            "responses": {"200": _json("a page: {instances, next_cursor}"), "422": _error("a bad filter")}}},
        "/api/instances/{instance_id}": {"get": {
            "summary": "One instance, with its input and output", "operationId": "get_instance",
            "parameters": [_ID], "responses": {"200": _json("the instance"), "404": _error("no such instance")}}},
        "/api/instances/{instance_id}/steps": {"get": {
            "summary": "An instance's steps, in the order they started", "operationId": "get_steps",
            "parameters": [_ID], "responses": {"200": _json("{steps}"), "404": _error("no such instance")}}},
        "/api/instances/{instance_id}/cancel": {"post": {
            "summary": "Cancel an unfinished instance", "operationId": "cancel", "parameters": [_ID],
            "responses": {"200": _json("{cancelled}: false if it had finished"), "404": _error("no such instance")}}},
        "/api/instances/{instance_id}/resume": {"post": {
            "summary": "Put an instance whose engine is gone back in its queue", "operationId": "resume",
            "parameters": [_ID],
            "responses": {"200": _json("{resumed}"), "404": _error("no such instance")}}},
        "/api/instances/{instance_id}/signal": {"post": {
            "summary": "Send a signal with a JSON payload", "operationId": "signal", "parameters": [_ID],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _schema(SignalBody, components)}}},
            "responses": {"202": _json("{seq}: its sequence number"), "404": _error("no such instance"),
                          "409": _error("the instance has finished"), "422": _error("a bad name or body")}}},
        "/api/instances/{instance_id}/events": {"get": {
            "summary": "The instance's events: its log from the start (or after Last-Event-ID), then live, "
                       "until its last", "operationId": "instance_events", "parameters": [_ID, _LAST],
            "responses": {"200": _SSE, "204": {"description": "the log has ended: nothing after Last-Event-ID"},
                          "404": _error("no such instance")}}},
        "/api/events": {"get": {
            "summary": "Every instance's events, live (or after Last-Event-ID)", "operationId": "events",
            "parameters": [{"name": "workflow", "in": "query", "schema": {"type": "string"}}, _LAST],
            "responses": {"200": _SSE}}},
    }
    for entry in entries:
        if entry.workflow is not None:
            paths[f"/api/workflows/{entry.name}/instances"] = {"post": _start_operation(entry, components)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "durable", "version": __version__,
                 "description": "Start, watch and control durable workflow instances. Requests that change "
                                "something are sent as application/json; with a token set, every request carries "
                                "'Authorization: Bearer <token>'."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
