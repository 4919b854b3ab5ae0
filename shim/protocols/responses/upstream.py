"""Native pass-through: a Responses request relayed to an upstream that serves /v1/responses itself. Pure."""
from __future__ import annotations

from ..render import StreamRenderer
from .response import failure_code

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def upstream_body(body, target):
    """The client's body as the upstream gets it: only the model is renamed to the upstream's name for it."""
    return {**body, "model": target}


def client_view(payload, model):
    """An upstream Response or stream event as the client sees it: the model named as the client named it."""
    response = payload.get("response") if payload.get("object") != "response" else payload
    if isinstance(response, dict) and "model" in response:
        response = {**response, "model": model}
        return response if payload.get("object") == "response" else {**payload, "response": response}
    return payload


class RelayStream(StreamRenderer):
    """Relays the upstream's events as they are; a stream cut short or left unfinished ends with response.failed."""

    def __init__(self, model):
        self.model = model
        self.sequence = 0
        self.response = {"id": None, "object": "response", "model": model, "output": []}
        "The latest Response the upstream sent (the base of a response.failed shim has to write)."
        self.ended = False

    def chunks(self, event):
        """The upstream's event, relayed."""
        event = client_view(event, self.model)
        if isinstance(event.get("response"), dict):
            self.response = event["response"]
        if isinstance(event.get("sequence_number"), int):
            self.sequence = event["sequence_number"] + 1
        self.ended = self.ended or event.get("type") in TERMINAL
        return [event]

    def end(self):
        """Nothing after the upstream's own terminal event; response.failed if it sent none."""
        if self.ended:
            return []
        return self._failed("server_error", "the upstream ended its stream without a terminal event")

    def error(self, err):
        """response.failed, unless the upstream already ended the stream."""
        return [] if self.ended else self._failed(failure_code(err), err.message)

    def _failed(self, code, message):
        self.ended = True
        response = {**self.response, "status": "failed", "error": {"code": code, "message": message}}
        return [{"type": "response.failed", "sequence_number": self.sequence, "response": response}]
