"""Anthropic's Messages API: request.py parses client requests, response.py renders answers, streams and errors."""
