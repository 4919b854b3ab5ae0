"""Ollama's API (generate, chat, embed, models, management): parsing, rendering, and upstream translation."""
from .request import (Call, parse_generate, parse_chat, parse_embed, parse_embeddings, parse_copy, CREATE_FIELDS, parse_create,
                      parse_model_name)
from .response import (timestamp, GenerateStream, ChatStream, ProgressStream, render_tags, render_ps, render_show,
                       render_upstream_show, render_error)
from .upstream import upstream_options, upstream_call, UpstreamReader, described_by_show

__all__ = ["Call", "parse_generate", "parse_chat", "parse_embed", "parse_embeddings", "parse_copy", "CREATE_FIELDS",
           "parse_create", "parse_model_name", "timestamp", "GenerateStream", "ChatStream", "ProgressStream",
           "render_tags", "render_ps", "render_show", "render_upstream_show", "render_error", "upstream_options",
           "upstream_call", "UpstreamReader", "described_by_show"]
