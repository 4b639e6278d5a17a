"""The OpenAPI 3.0 document of the HTTP send API, served at /v1/openapi.json.

Kept next to the handlers (api.py) and checked against them by schemathesis in the e2e tests
(tests/e2e/test_api.py): whatever the document allows must never get a 5xx.
"""

from __future__ import annotations

from typing import Any

from txmail import tags
from txmail.events import KINDS, MESSAGE_EVENTS_MAX
from txmail.stats import MAX_ANSWER_DAYS, OTHER
from txmail.store.suppressions import LISTS
from txmail.tracker.idempotency import MAX_KEY


def _error() -> dict[str, Any]:
    return {
        "description": "An error: the sentence and SMTP codes a mail client would get.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


ERRORS = {
    "400": _error(),
    "401": _error(),
    "403": _error(),
    "404": _error(),
    "413": _error(),
    "422": _error(),
    "429": _error(),
    "503": _error(),
}
ADDRESS = {"type": "string", "format": "email", "maxLength": 320}
TAG = {"type": "string", "minLength": 1, "maxLength": 64}


def document() -> dict[str, Any]:
    event = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string", "enum": list(KINDS)},
            "recipient": {"type": "string"},
            "message_id": {"type": "string"},
            "timestamp": {"type": "string"},
            "account": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "details": {"type": "object"},
        },
    }
    suppression = {
        "type": "object",
        "properties": {
            "list": {"type": "string", "enum": list(LISTS)},
            "recipient": {"type": "string"},
            "reason": {"type": "string"},
            "created_at": {"type": "number"},
            "event_id": {"type": "string", "nullable": True},
            "expires_at": {"type": "number", "nullable": True},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "txmail HTTP API",
            "version": "1",
            "description": "Send mail through txmail's Postfix as an account, and read its "
            "messages, events, suppression lists and counts.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`txmail accounts apikey NAME`",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "message": {"type": "string"},
                                "smtp_code": {"type": "integer", "nullable": True},
                                "status": {"type": "string", "nullable": True},
                                "recipient": {"type": "string"},
                                "outcome": {
                                    "type": "string",
                                    "enum": ["unknown"],
                                    "description": "On a 503 of /v1/send: the message "
                                    "was handed to Postfix but its answer was lost; it may "
                                    "be queued (see the send's 503)",
                                },
                            },
                        }
                    },
                },
                "Event": event,
                "Suppression": suppression,
                "SendRequest": {
                    "type": "object",
                    "required": ["mime"],
                    "additionalProperties": False,
                    "properties": {
                        "envelope": {**ADDRESS, "description": "MAIL FROM; leave out for <>"},
                        "recipients": {
                            "type": "array",
                            "items": ADDRESS,
                            "minItems": 1,
                            "maxItems": 1000,
                            "description": "At most the account's max_recipients (and 1000); "
                            "more is a 422 naming the limit",
                        },
                        "recipient": {
                            **ADDRESS,
                            "description": "One recipient instead of recipients",
                        },
                        "mime": {
                            "type": "string",
                            "minLength": 1,
                            "description": "The whole message: headers, blank line, body",
                        },
                        "dsn": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "notify": {"type": "string", "example": "FAILURE,DELAY"},
                                "ret": {"type": "string", "enum": ["FULL", "HDRS"]},
                                "envid": {"type": "string", "maxLength": 100},
                                "orcpt": ADDRESS,
                            },
                        },
                        "trackbounces": {
                            "type": "boolean",
                            "description": "Bounce tracking for this message alone (absent: "
                            "the sender address's, the sender domain's or the account's).",
                        },
                        "tags": {
                            "type": "array",
                            "maxItems": tags.MAX_TAGS,
                            "items": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": tags.MAX_LENGTH,
                                "pattern": "^[^,]+$",
                            },
                            "description": "Sent as X-Mxm-Tag and judged as the milter judges "
                            f"it: at most {tags.MAX_TAGS} different tags of at most "
                            f"{tags.MAX_LENGTH} printable characters, else a 422 with the "
                            "SMTP refusal's sentence (554 5.6.0)",
                        },
                    },
                },
            },
        },
        "paths": {
            "/v1/send": {
                "post": {
                    "summary": "Send one message through Postfix as the key's account",
                    "operationId": "send",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_KEY,
                                "pattern": "^[\\x21-\\x7e]+$",
                            },
                            "description": "The same key within 24 hours (per account) gets "
                            "the first answer, status and body, with header "
                            "Idempotent-Replayed: true, and sends nothing again; while the "
                            "first is still being sent, 409 (ask again in a few seconds); "
                            "with a different body, 422. Only Postfix's final answers are "
                            "kept: after bad input, a limit or a temporary refusal the key "
                            "is free for the corrected request or the retry. An unknown "
                            "outcome (503 with outcome: unknown) is kept too, so the key "
                            "never sends the message twice.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SendRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": _ok(
                            {
                                "type": "object",
                                "required": ["message_id"],
                                "properties": {"message_id": {"type": "string"}},
                            },
                            "Queued; message_id is Postfix's queue id",
                        ),
                        **ERRORS,
                        "503": {
                            **_error(),
                            "description": "Try again later (Retry-After); or, with "
                            'error.outcome "unknown" and no Retry-After, the message was '
                            "handed to Postfix but its answer was lost: it may be queued, so "
                            "look for it in GET /v1/events before sending it again under a "
                            "new Idempotency-Key (this key keeps this answer).",
                        },
                        "409": _error(),
                    },
                }
            },
            "/v1/messages/{message_id}": {
                "get": {
                    "summary": "One message of the account and its events (another "
                    "account's message is a 404, as a missing one)",
                    "operationId": "getMessage",
                    "parameters": [
                        {
                            "name": "message_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "maxLength": 40},
                        }
                    ],
                    "responses": {
                        "200": _ok(
                            {
                                "type": "object",
                                "properties": {
                                    "message_id": {"type": "string"},
                                    "events": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Event"},
                                        "description": "Every event of the message, oldest "
                                        "first, whatever its age while the record lives "
                                        f"(the first {MESSAGE_EVENTS_MAX})",
                                    },
                                    "events_unlisted": {
                                        "type": "integer",
                                        "description": "Events recorded after the first "
                                        f"{MESSAGE_EVENTS_MAX}: in GET /v1/events only",
                                    },
                                },
                            }
                        ),
                        **ERRORS,
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "The account's events, oldest first",
                    "operationId": "listEvents",
                    "parameters": [
                        _query("after", {"type": "string"}, "`next` of the previous page"),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                            "Most events to return (default 100)",
                        ),
                        _query("kind", {"type": "string", "enum": list(KINDS)}, "Only this kind"),
                        _query("message_id", {"type": "string"}, "Only this message's events"),
                        _query(
                            "tag",
                            TAG,
                            "Only events of messages carrying this tag (among the `limit` read)",
                        ),
                    ],
                    "responses": {
                        "200": _ok(
                            {
                                "type": "object",
                                "properties": {
                                    "events": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Event"},
                                    },
                                    "next": {"type": "string"},
                                },
                            }
                        ),
                        **ERRORS,
                    },
                }
            },
            "/v1/suppressions": {
                "get": {
                    "summary": "The account's suppression lists, newest first",
                    "operationId": "listSuppressions",
                    "parameters": [
                        _query("list", {"type": "string", "enum": list(LISTS)}, "Only this list"),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                            "Most entries to return (default 100)",
                        ),
                    ],
                    "responses": {
                        "200": _ok(
                            {
                                "type": "object",
                                "properties": {
                                    "suppressions": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Suppression"},
                                    }
                                },
                            }
                        ),
                        **ERRORS,
                    },
                },
                "post": {
                    "summary": "Put a recipient on a list (default: unsubscribe)",
                    "operationId": "addSuppression",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["recipient"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "recipient": ADDRESS,
                                        "list": {"type": "string", "enum": list(LISTS)},
                                        "reason": {"type": "string", "maxLength": 512},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _ok(
                            {
                                "type": "object",
                                "properties": {
                                    "suppression": {"$ref": "#/components/schemas/Suppression"}
                                },
                            },
                            "Added",
                        ),
                        **ERRORS,
                    },
                },
                "delete": {
                    "summary": "Take a recipient off a list (default: both lists)",
                    "operationId": "removeSuppression",
                    "parameters": [
                        _query("recipient", ADDRESS, "The address", True),
                        _query("list", {"type": "string", "enum": list(LISTS)}, "Only this list"),
                    ],
                    "responses": {
                        "200": _ok(
                            {"type": "object", "properties": {"removed": {"type": "boolean"}}}
                        ),
                        **ERRORS,
                    },
                },
            },
            "/v1/stats": {
                "get": {
                    "summary": "Accepted messages and events per UTC day and kind, and per tag",
                    "operationId": "stats",
                    "parameters": [
                        _query(
                            "days",
                            {"type": "integer", "minimum": 1, "maximum": MAX_ANSWER_DAYS},
                            "Days back, today included (default 7; not with `since`)",
                        ),
                        _query(
                            "since",
                            {"type": "string", "format": "date"},
                            f"First UTC day, YYYY-MM-DD: at most {MAX_ANSWER_DAYS} days back, "
                            "today included, and within events.counter_days",
                        ),
                        _query(
                            "tag",
                            TAG,
                            f"Only this tag's counts (\"{OTHER}\": tags past the day's cap)",
                        ),
                    ],
                    "responses": {
                        "200": _ok(
                            {
                                "type": "object",
                                "properties": {
                                    "days": {"type": "array", "items": {"type": "object"}},
                                    "totals": {"type": "object"},
                                    "tags": {"type": "object"},
                                    "tag": {"type": "string"},
                                },
                            }
                        ),
                        **ERRORS,
                    },
                }
            },
        },
    }
