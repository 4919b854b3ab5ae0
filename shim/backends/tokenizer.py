"""A model's vocabulary on its own (no weights): prompts are tokenised here, apart from the decoding engine.

llama.cpp's tokenizer only reads the vocabulary (its own server tokenises on HTTP threads while its main loop
decodes), so any number of requests tokenise at once, each on its own thread, under no lock.
"""
from __future__ import annotations

import ctypes
import re

from ..errors import BackendUnavailable, Cancelled

CHUNK_BYTES = 64 * 1024
"Text is tokenised in pieces of about this size, so that a client who leaves stops the work within one piece."


class Vocabulary:
    """The tokenizer of one GGUF model, loaded vocabulary-only (a few MB); safe to use from many threads at once."""

    def __init__(self, path):
        import llama_cpp
        from llama_cpp import _internals
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self.model = _internals.LlamaModel(path_model=path, params=params, verbose=False)
        except ValueError as err:
            raise BackendUnavailable(f"cannot load the vocabulary of {path}: {err}") from err
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self.metadata = self.model.metadata()
        self.bos, self.eos = self.model.token_bos(), self.model.token_eos()
        self.add_bos = self.bos >= 0 and self.model.add_bos_token()
        self.byte_level = self.model.vocab_type() == llama_cpp.LLAMA_VOCAB_TYPE_BPE
        # specials: the tokens llama.cpp finds in text told to parse special tokens (controls: only then);
        # longest: the most bytes of text one token stands for, so n bytes of prompt are at least n / longest tokens.
        self.specials, self.controls, self.longest = self._scan()
        texts = sorted(self.specials, key=len, reverse=True)  # llama.cpp matches the longest first
        self._special_re = re.compile("|".join(map(re.escape, texts))) if texts else None

    def _scan(self):
        """(special token texts to ids, the control ones among them, the most bytes a token stands for)."""
        import llama_cpp
        special = (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
                   | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN)
        specials, controls, longest = {}, [], 1
        buf = ctypes.create_string_buffer(1024)
        for token in range(self.n_vocab):
            attr = llama_cpp.llama_vocab_get_attr(self.vocab, token)
            text = llama_cpp.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="replace") \
                if attr & special else ""
            if text and text not in specials:
                specials[text] = token
                if not attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED:
                    controls.append(text)
            size = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
            longest = max(longest, size if size >= 0 else len(self.piece(token, special=True)))
        return specials, controls, longest

    def piece(self, token, special=False):
        """The bytes one token stands for."""
        import llama_cpp
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def text(self, token):
        """A token's text, special tokens spelt out."""
        return self.piece(token, special=True).decode("utf-8", errors="replace")

    def split(self, text):
        """The text as plain strings and the ids of the special tokens spelt in it, in order.

        Found here in linear time: llama.cpp's own search is quadratic in the number of special tokens.
        """
        if self._special_re is None:
            return [text]
        parts, start = [], 0
        for match in self._special_re.finditer(text):
            parts += [text[start:match.start()], self.specials[match.group()]]
            start = match.end()
        return parts + [text[start:]]

    def tokenize(self, parts, cancel=None):
        """Token ids of split text: strings tokenised as plain text, piece by piece, checking cancel in between."""
        tokens = []
        for part in parts:
            if not isinstance(part, str):
                tokens.append(part)
                continue
            for piece in self._pieces(part):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("the client closed the connection")
                tokens += self._tokenize(piece.encode())
        return tokens

    def _pieces(self, text):
        """Text cut where no token can span the cut (before a space that starts a word), about CHUNK_BYTES apart.

        Only byte-level BPE pre-splits words that way; other vocabularies get the text whole.
        """
        if not self.byte_level or len(text) <= CHUNK_BYTES:
            return [text] if text else []
        pieces, start = [], 0
        for match in _WORD_START.finditer(text, CHUNK_BYTES):
            if match.start() - start >= CHUNK_BYTES:
                pieces.append(text[start:match.start()])
                start = match.start()
        pieces.append(text[start:])
        return pieces

    def _tokenize(self, data):
        import llama_cpp
        if not data:
            return []
        room = len(data) + 8  # a token stands for one byte at least; room for what llama.cpp adds
        tokens = (llama_cpp.llama_token * room)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, room, False, False)
        if n < 0:
            raise BackendUnavailable(f"cannot tokenise the prompt ({len(data)} bytes)")
        return tokens[:n]

    def close(self):
        """Free the vocabulary."""
        self.model.close()


_WORD_START = re.compile(r"(?<=[^\s])(?= [^\W\d_])")
"A space between a non-space and a letter: byte-level BPE pre-tokenizers always start a word there."
