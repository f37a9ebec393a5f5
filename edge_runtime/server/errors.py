"""HTTP errors: the project's exceptions mapped to status codes in one table.

Bodies are JSON in the Custom Vision error shape, {"code": ..., "message": ...}, with a
proper status (the exported container answers errors with 200 and a string: not here).
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import (
    ConfigError,
    EdgeRuntimeError,
    ImageBusyError,
    ImageDecodeError,
    ImageTooLargeError,
    InferenceError,
    LabelConflictError,
    LabelError,
    LabelsError,
    first_line,
)
from ..model.slot import ModelUnavailable
from ..publish.registry import UnknownModel

log = logging.getLogger(__name__)


class HttpError(EdgeRuntimeError):
    """Errors that exist only at the HTTP boundary."""


class PayloadTooLarge(HttpError):
    pass


class BadRequest(HttpError):
    pass


class NotSupported(BadRequest):
    """The request asks the model for what it does not do (classify on a detector, detect on a classifier)."""


class Unauthorized(HttpError):
    pass


class Forbidden(HttpError):
    pass


class NotFound(HttpError):
    pass


class UpstreamError(HttpError):
    """Fetching an image from a URL failed."""


class Busy(HttpError):
    """A bounded resource (such as the POST /url threads) is in full use: try again."""


class Refused(HttpError):
    """An update to the model store failed its checks; the active version is unchanged."""


class Conflict(HttpError):
    """The change asked for cannot be made as things are (e.g. no earlier version)."""


class NoSpace(HttpError):
    """Not enough free disk space for what was sent."""


class Unprocessable(HttpError):
    """A body that parses but holds values that cannot be used (a box outside the image)."""


# Most specific first is not needed: the lookup walks each exception's MRO.
STATUS: dict[type[Exception], tuple[int, str]] = {
    PayloadTooLarge: (413, "BadRequestImageSizeBytes"),
    ImageTooLargeError: (400, "BadRequestImageDimensions"),
    ImageDecodeError: (400, "BadRequestImageFormat"),
    NotSupported: (400, "BadRequestNotSupported"),
    ImageBusyError: (503, "ServiceUnavailable"),
    BadRequest: (400, "BadRequest"),
    Unauthorized: (401, "Unauthorized"),
    Forbidden: (403, "Forbidden"),
    NotFound: (404, "NotFound"),
    UpstreamError: (502, "BadGateway"),
    Busy: (503, "ServiceUnavailable"),
    ModelUnavailable: (503, "ServiceUnavailable"),
    Refused: (422, "ModelRefused"),
    Conflict: (409, "Conflict"),
    NoSpace: (507, "InsufficientStorage"),
    Unprocessable: (422, "BadRequestLabel"),
    LabelConflictError: (409, "Conflict"),
    LabelError: (422, "BadRequestLabel"),
    LabelsError: (500, "InternalServerError"),
    InferenceError: (500, "InternalServerError"),
    ConfigError: (500, "InternalServerError"),
    EdgeRuntimeError: (500, "InternalServerError"),
}


def status_for(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, UnknownModel):  # the service's own codes: NotFoundProject, NotFoundIteration
        return 404, exc.code
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500, "InternalServerError"


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    async def project_error(request: Request, exc: Exception) -> JSONResponse:
        status, code = status_for(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, code, str(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, "NotFound" if exc.status_code == 404 else "BadRequest", str(exc.detail))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(400, "BadRequest", problems)

    async def client_gone(request: Request, exc: Exception) -> JSONResponse:
        # The client closed the connection (or was closed for being too slow) mid-body:
        # nobody reads this answer, and it is not the server's failure.
        return error_response(408, "RequestTimeout", "the connection closed before the whole request arrived")

    async def store_damaged(request: Request, exc: Exception) -> JSONResponse:
        # A damaged events.db: its routes answer in one line and the server goes on serving;
        # `edge-runtime events export` salvages what can still be read.
        log.error("%s %s: the event store cannot be read: %s", request.method, request.url.path, first_line(exc))
        return error_response(503, "ServiceUnavailable", f"the event store cannot be read ({first_line(exc)}); "
                              "`edge-runtime events export` copies what can still be read")

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "InternalServerError", "internal error; the server log has the details")

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(sqlite3.DatabaseError, store_damaged)
    app.add_exception_handler(EdgeRuntimeError, project_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
