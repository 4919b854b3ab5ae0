"""OpenAI's API (chat completions, completions, embeddings, models): parsing, rendering, and upstream translation."""
from .request import (REFUSED, ACCEPTED_NO_EFFECT, CHAT_FIELDS, COMPLETION_FIELDS, Call, parse_chat, parse_completion,
                      parse_embeddings)
from .response import (FINGERPRINT, render_chat, render_text_completion, render_usage, ChatStream, CompletionStream,
                       render_embeddings, render_model, render_models, render_error, render_envelope)
from .upstream import upstream_request, render_tool_choice, UpstreamReader, described_by_model

__all__ = ["REFUSED", "ACCEPTED_NO_EFFECT", "CHAT_FIELDS", "COMPLETION_FIELDS", "Call", "parse_chat", "parse_completion",
           "parse_embeddings",
           "FINGERPRINT", "render_chat", "render_text_completion", "render_usage", "ChatStream", "CompletionStream",
           "render_embeddings", "render_model", "render_models", "render_error", "render_envelope", "upstream_request",
           "render_tool_choice", "UpstreamReader", "described_by_model"]
