"""/openapi.json, written from the route table (routes.OPS) and the parameter declarations."""

from __future__ import annotations

from typing import Any

import facecore
from facecore_server.routes import CLOUD_PATHS, CLOUD_PREFIX, OPS, PREFIXES


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


# docs/auth.md: a token in the query, or the key pair in two headers.
SECURITY_SCHEMES = {
    "accessToken": {"type": "apiKey", "in": "query", "name": "access_token"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
    "secretKey": {"type": "apiKey", "in": "header", "name": "X-Secret-Key"},
}


def document(default_appid: str | None, auth_required: bool = False) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    appid = {
        "name": "appid",
        "in": "query",
        "required": default_appid is None and not auth_required,
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
        urls = [
            (
                f"{PREFIXES[0]}/{path}",
                path.replace("/", "_").replace("-", "_"),
                op.summary + ("" if path == op.path else f" (alias of {op.path})"),
            )
            for path in (op.path, *op.aliases)
        ] + [
            (
                f"{CLOUD_PREFIX}/{cloud}",
                "cloud_" + cloud.replace("/", "_").replace("-", "_"),
                f"{op.summary} (public-cloud path)",
            )
            for cloud, private in CLOUD_PATHS.items()
            if private == op.path
        ]
        for url, operation_id, summary in urls:
            paths[url] = {
                "post": {
                    "operationId": operation_id,
                    "summary": summary,
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
            "security": [],
            "summary": "face_field values, controls and limits this server supports",
            "responses": {
                "200": {
                    "description": "the v3 envelope",
                    "content": {"application/json": {"schema": envelope({"type": "object"})}},
                }
            },
        }
    }
    credential = {"in": "query", "required": True, "schema": {"type": "string"}}
    paths["/oauth/2.0/token"] = {
        "get": {
            "operationId": "oauth_token",
            "summary": "an access token for an API key and secret (docs/auth.md)",
            "security": [],
            "parameters": [
                {**credential, "name": "grant_type", "schema": {"enum": ["client_credentials"]}},
                {**credential, "name": "client_id"},
                {**credential, "name": "client_secret"},
            ],
            "responses": {
                "200": {"description": "access_token, token_type, expires_in, scope"},
                "400": {"description": "error: invalid_request or unsupported_grant_type"},
                "401": {"description": "error: invalid_client"},
                "429": {"description": "error: invalid_client, too many failures; Retry-After"},
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
                "security": [],
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
            + ". Credentials (docs/auth.md): "
            + ("required" if auth_required else "optional; when sent, they are checked")
            + ".",
        },
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES},
        # Either credential; without --auth required, none at all ({}).
        "security": [
            *([] if auth_required else [{}]),
            {"accessToken": []},
            {"apiKey": [], "secretKey": []},
        ],
    }
