"""One error type for the whole server, mapped to gRPC status codes and HTTP codes.

Every module raises `ServingError(code, message)`; the gRPC layer aborts with `code`, the REST layer answers
`{"error": message}` with the HTTP status TF Serving uses for that code (model_servers/http_server.cc,
ToHTTPStatusCode), so clients see the same behaviour as against a real TF Serving.
"""
from __future__ import annotations

import grpc

# TF Serving's mapping, verbatim from http_server.cc (CANCELLED -> 499 "client closed request").
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# Names used in GetModelStatus responses (tensorflow.error.Code enum names; "OK" when healthy).
ERROR_CODE_NAMES: dict[grpc.StatusCode, str] = {code: code.name for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failure with the gRPC status code that describes it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status_for(self.code)

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def http_status_for(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def deadline_exceeded(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def internal(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INTERNAL, message)
