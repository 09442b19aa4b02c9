"""/openapi.json, written from the route table (routes.OPS) and the parameter declarations."""

from __future__ import annotations

from typing import Any

import facecore
from facecore_server.routes import OPS, PREFIXES


def envelope(result: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error_code", "error_msg", "log_id", "timestamp", "cached", "result"],
        "properties": {
            "error_code": {"type": "integer", "description": "0 on success; see the spec's table"},
            "error_msg": {"type": "string"},
            "error_detail": {"type": "string", "description": "why, in words (errors only)"},
            "log_id": {"type": "integer", "minimum": 10**12, "maximum": 10**13 - 1},
            "timestamp": {"type": "integer"},
            "cached": {"type": "integer", "enum": [0]},
            "result": {"anyOf": [result, {"type": "null"}]} if result else {"type": "null"},
        },
    }


def document(default_appid: str | None) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    appid = {
        "name": "appid",
        "in": "query",
        "required": default_appid is None,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_]+$", "minLength": 1, "maxLength": 48},
        "description": "the tenant; libraries of different appids never see each other",
    }
    for op in OPS:
        item = {
            "type": "object",
            "required": [p.name for p in op.params if p.required],
            "properties": {p.name: p.schema() for p in op.params},
        }
        body = (
            {"type": "array", "minItems": min(op.counts), "maxItems": max(op.counts), "items": item}
            if op.counts
            else item
        )
        for path in (op.path, *op.aliases):
            paths[f"{PREFIXES[0]}/{path}"] = {
                "post": {
                    "operationId": path.replace("/", "_").replace("-", "_"),
                    "summary": op.summary + ("" if path == op.path else f" (alias of {op.path})"),
                    "parameters": [appid],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": body}},
                    },
                    "responses": {
                        "200": {
                            "description": "the v3 envelope (errors too are HTTP 200)",
                            "content": {"application/json": {"schema": envelope(op.result)}},
                        }
                    },
                }
            }
    paths[f"{PREFIXES[0]}/capabilities"] = {
        "get": {
            "operationId": "capabilities",
            "summary": "face_field values, controls and limits this server supports",
            "responses": {
                "200": {
                    "description": "the v3 envelope",
                    "content": {"application/json": {"schema": envelope({"type": "object"})}},
                }
            },
        }
    }
    for path, summary in (
        ("/health", "liveness of the process and its configuration"),
        ("/metrics", "Prometheus text format"),
    ):
        paths[path] = {
            "get": {
                "operationId": path[1:],
                "summary": summary,
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.1.0",  # 3.1: its schemas are JSON Schema 2020-12 ({"type": "null"})
        "info": {
            "title": "FaceCore",
            "version": facecore.__version__,
            "description": "Baidu face private-deployment v3 API. Every route also answers under "
            + ", ".join(PREFIXES[1:])
            + ".",
        },
        "paths": paths,
    }
