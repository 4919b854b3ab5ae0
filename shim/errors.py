"""The shared error types: every layer raises these, each protocol renders them in its own shape."""


class ShimError(Exception):
    """Base of every error shim turns into an HTTP answer."""

    status: int = 500
    kind: str = "api_error"
    code: str | None = None

    def __init__(self, message, *, param=None, status=None, code=None, headers=None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InvalidRequest(ShimError):
    """The request is malformed, wrongly typed or out of range."""

    status = 400
    kind = "invalid_request_error"


class Unsupported(InvalidRequest):
    """The request asks for something this model or backend cannot do."""

    code = "unsupported"


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus the requested completion) does not fit the context window."""

    code = "context_length_exceeded"


class ModelNotFound(ShimError):
    """No configured model answers to that name."""

    status = 404
    kind = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, name):
        super().__init__(f"model '{name}' not found", param="model")
        self.name = name


class NotFound(ShimError):
    """No route answers to that path."""

    status = 404
    kind = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ShimError):
    """The route exists but not for that HTTP method."""

    status = 405
    kind = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ShimError):
    """The request body is larger than the configured limit."""

    status = 413
    kind = "invalid_request_error"
    code = "payload_too_large"


class Unauthorized(ShimError):
    """A valid API key is required."""

    status = 401
    kind = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(ShimError):
    """The caller may not do this here (model management that the settings do not allow)."""

    status = 403
    kind = "permission_error"
    code = "forbidden"


class ServerBusy(ShimError):
    """The model's queue is full; try again later."""

    status = 429
    kind = "server_busy"
    code = "server_busy"


class BackendUnavailable(ShimError):
    """A backend cannot be reached or cannot load the model."""

    status = 503
    kind = "api_error"
    code = "backend_unavailable"


class StoreUnavailable(BackendUnavailable):
    """The response store cannot be reached or cannot be written."""

    code = "store_unavailable"


class UpstreamError(ShimError):
    """An upstream server answered with an error or with something unreadable."""

    status = 502
    kind = "api_error"
    code = "upstream_error"


class Cancelled(ShimError):
    """The client went away; the generation was stopped."""

    status = 499
    kind = "api_error"
    code = "cancelled"


class ConfigError(Exception):
    """The configuration is invalid (raised at start-up, never per request)."""
