"""The internal generation contract: what every protocol parses into and every backend yields. No I/O."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Union

from .errors import Unsupported


@dataclass(frozen=True)
class ToolCall:
    """One function call the model made."""

    id: str
    name: str
    arguments: str
    "The arguments as a JSON text (OpenAI's shape); Ollama renders it as an object."
    partial: bool = False
    "Cut off (max_tokens, a stop sequence) before it was complete: arguments hold only what was written."


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: str
    "system, user, assistant or tool (OpenAI's developer arrives here as system)."
    content: str = ""
    images: tuple[bytes, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: Optional[str] = None
    name: Optional[str] = None
    "For a tool message: the name of the tool that answered."
    reasoning: str = ""
    "For an assistant message: the reasoning the model wrote before this answer (kept for models that read it)."


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class ToolChoice:
    """Which tools the model may call, and whether it must call one."""

    mode: str = "auto"
    "auto (may call), none (must not), required (must call one) or named (must call `name`)."
    name: Optional[str] = None
    "With named: the tool to call."
    kind: str = "function"
    "function or custom: the kind of tool `name` is (Responses names custom tools too)."
    allowed: tuple[str, ...] = ()
    "The names of the tools auto or required may choose from (Responses' allowed_tools); empty is every tool."

    @classmethod
    def named(cls, name, kind="function"):
        """The choice that forces a call of one tool."""
        return cls("named", name, kind)

    @property
    def forced(self):
        """Whether a call must be made."""
        return self.mode in ("required", "named")

    def offered(self, tools):
        """The tools the model may call under this choice, in their order."""
        if self.mode == "none":
            return ()
        if self.mode == "named":
            return tuple(t for t in tools if t.name == self.name)
        return tuple(t for t in tools if not self.allowed or t.name in self.allowed)


@dataclass(frozen=True)
class Think:
    """Whether a thinking model reasons before it answers, and how hard."""

    enabled: bool = True
    effort: Optional[str] = None
    "low, medium, high or max; None is the model's default."
    budget_tokens: Optional[int] = None
    "A cap on the reasoning tokens, for protocols that set one (Anthropic's budget_tokens)."


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen; None means the backend's default."""

    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    typical_p: Optional[float] = None
    seed: Optional[int] = None
    repeat_penalty: Optional[float] = None
    repeat_last_n: Optional[int] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseFormat:
    """A constraint on the output: any JSON object, or JSON valid against a schema."""

    kind: str
    "json or json_schema"
    schema: Optional[Mapping] = None
    name: Optional[str] = None


@dataclass(frozen=True)
class GenerationRequest:
    """One request for generation, whichever protocol it came in by."""

    model: str
    messages: Optional[tuple[Message, ...]] = None
    "A chat; exactly one of messages and prompt is set."
    prompt: Optional[str] = None
    raw: bool = False
    "With prompt: send it as it is, without the chat template."
    system: Optional[str] = None
    "With prompt: a system message to put before it."
    suffix: Optional[str] = None
    images: tuple[bytes, ...] = ()
    "With prompt: images that go with it."
    context: tuple[int, ...] = ()
    "With prompt: the token ids of a previous exchange to continue (Ollama's context)."
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: Optional[int] = None
    stop: tuple[str, ...] = ()
    response_format: Optional[ResponseFormat] = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1
    num_ctx: Optional[int] = None
    think: Optional[Think] = None
    "None: the model's default."
    keep_alive: Optional[float] = None
    "Seconds to keep the model loaded afterwards; negative is forever, 0 unloads."
    backend_options: Mapping = field(default_factory=dict)
    "Backend-native options passed through as they are (e.g. Ollama options an OpenAI client sent)."
    truncate: bool = False
    "A prompt too long for the window is cut to fit (Ollama's manner: oldest turns first) rather than refused."
    extra_fields: Mapping = field(default_factory=dict)
    "Fields of an OpenAI request shim does not know (e.g. chat_template_kwargs), for an OpenAI-compatible upstream."
    stream: bool = True
    "Whether the client reads the answer as it is made; False lets an upstream backend ask for it whole."
    heartbeat_seconds: Optional[float] = None
    "For a backend that signals_silence: yield HEARTBEAT after this many seconds without an event (None: never)."

    def replaced(self, **changes):
        """A copy with the fields in changes changed, as dataclasses.replace makes it."""
        # dataclasses.replace passes every field through __init__ again (6 us, measured); this class checks none.
        unknown = changes.keys() - self.__dict__.keys()
        if unknown:
            raise TypeError(f"GenerationRequest has no field {', '.join(sorted(unknown))}")
        copy = object.__new__(GenerationRequest)
        copy.__dict__.update(self.__dict__, **changes)
        return copy


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log probability, with the most likely alternatives at its place."""

    token: str
    logprob: float
    bytes: tuple[int, ...] = ()
    top: tuple["TokenLogprob", ...] = ()


@dataclass(frozen=True)
class Accepted:
    """The backend validated the request and will generate; nothing is sent to the client for it."""

    prompt_tokens: Optional[int] = None


@dataclass(frozen=True)
class TextDelta:
    """New text for one choice."""

    text: str
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text of a thinking model for one choice, kept apart from the answer."""

    text: str
    index: int = 0


@dataclass(frozen=True)
class ToolCallArgumentsDelta:
    """A piece of a tool call's arguments as it streams in; the whole call's ToolCallDelta still follows it."""

    text: str
    id: str
    "The call's id: the same on every piece and on its ToolCallDelta."
    name: str
    index: int = 0
    position: int = 0
    "The call's place among this choice's calls."


@dataclass(frozen=True)
class ToolCallDelta:
    """A complete tool call for one choice (after its ToolCallArgumentsDelta pieces, where a backend streams them)."""

    call: ToolCall
    index: int = 0
    position: int = 0
    "The call's place among this choice's calls."


@dataclass(frozen=True)
class Usage:
    """Token counts of one request (all choices together)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    "Prompt tokens taken from the KV cache rather than evaluated (OpenAI's prompt_tokens_details.cached_tokens)."
    reasoning_tokens: int = 0
    "Completion tokens spent on reasoning (part of completion_tokens; OpenAI's completion_tokens_details)."

    @property
    def total_tokens(self):
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Measured durations in nanoseconds, as Ollama reports them."""

    total_ns: int = 0
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0


@dataclass(frozen=True)
class Finish:
    """The end of one choice: why it stopped, and (on the last choice) what it cost."""

    reason: str
    "stop, length or tool_calls"
    index: int = 0
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    context: tuple[int, ...] = ()
    "The token ids of prompt and answer, for Ollama's generate context."
    stop_sequence: Optional[str] = None
    "The stop string that ended the choice, where the backend knows it (not yet on any wire)."


Event = Union[Accepted, TextDelta, ReasoningDelta, ToolCallArgumentsDelta, ToolCallDelta, Finish]


@dataclass(frozen=True)
class Embeddings:
    """Raw (not normalised) embedding vectors, one per input, and the tokens they took."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int
    total_ns: int = 0
    load_ns: int = 0


CAPABILITIES = ("completion", "tools", "insert", "vision", "embedding", "thinking")
"The capabilities Ollama names in /api/show, /api/tags (and shim in /v1/models)."


@dataclass(frozen=True)
class ModelInfo:
    """What a backend says of one model it serves."""

    name: str
    backend: str
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    format: str = "gguf"
    size: int = 0
    digest: str = ""
    context_length: int = 0
    "The context window in tokens; 0 when nobody knows it (then it is left out of what clients are told)."
    modified_at: float = 0.0
    capabilities: tuple[str, ...] = ("completion",)
    template: str = ""
    loaded: bool = False
    expires_at: Optional[float] = None
    extra: Mapping = field(default_factory=dict)


class Cancel:
    """A flag the front sets when the client goes away; backends check it between tokens."""

    def __init__(self):
        self._event = threading.Event()

    def set(self):
        """Ask the generation to stop."""
        self._event.set()

    def is_set(self):
        """Whether the generation should stop."""
        return self._event.is_set()


class Backend:
    """The base every backend derives from: models() and generate() are required, the rest optional."""

    name: str = ""
    description: str = "a backend"
    "What kind of server this is, for messages (e.g. 'an OpenAI-compatible server')."
    can_manage: bool = False
    "Whether manage() pulls, pushes, creates, copies and deletes models (an Ollama instance does)."
    serves_responses: bool = False
    "Whether relay_responses() passes OpenAI Responses requests to an upstream that serves them natively."
    signals_silence: bool = False
    "Whether generate() yields HEARTBEAT (shim.streaming) after request.heartbeat_seconds without an event."

    def models(self) -> list[ModelInfo]:
        """The models this backend serves, each with its declared capabilities and context length."""
        raise NotImplementedError

    def generate(self, request: GenerationRequest, cancel: Cancel) -> Iterator[Event]:
        """Yield Accepted, then deltas, then one Finish per choice."""
        raise NotImplementedError

    def has_model(self, name: str) -> bool:
        """Whether this backend serves a model by that name."""
        return any(m.name == name for m in self.models())

    @property
    def list_error(self) -> Optional[str]:
        """Why the backend could not list its models just now, or None."""
        return None

    def embed(self, model: str, inputs: list[str], truncate: bool = True,
              cancel: Optional[Cancel] = None) -> Embeddings:
        """Embed each input; raise Cancelled once cancel is set, where the work can stop part way."""
        raise Unsupported(f"model '{model}' does not support embeddings ({self.description} '{self.name}' does "
                          "not serve them)", param="model")

    def count_tokens(self, request: GenerationRequest) -> Optional[int]:
        """The length of the request's prompt as the model would see it, or None where the backend cannot tell."""
        return None

    def show(self, model: str) -> Optional[Mapping]:
        """The backend's own /api/show answer for a model, or None to describe it from models()."""
        return None

    def load(self, model: str, keep_alive: Optional[float] = None) -> str:
        """Load a model now (keep_alive 0: unload it); returns what was done, as Ollama's done_reason says it."""
        return "load"

    def manage(self, action: str, **fields) -> Iterator[Mapping]:
        """Run a model-management action, yielding its progress objects."""
        raise Unsupported(f"model management is not available on backend '{self.name}' ({self.description})",
                          param="model")

    def relay_responses(self, body: Mapping, cancel: Cancel, idle: Optional[float] = None) -> Iterator[Mapping]:
        """Send a Responses request as it is; yield the upstream's stream events (with idle, PAUSE before each wait and
        HEARTBEAT after idle silent seconds, as generate does), or its one whole Response."""
        raise NotImplementedError

    def check(self) -> bool:
        """Whether the backend is ready to serve."""
        return True

    def preload(self) -> None:
        """Get ready before the first request (load models); nothing by default."""

    def close(self) -> None:
        """Release what the backend holds; nothing by default."""


@dataclass
class Choice:
    """One choice gathered from a stream of events, for non-streaming answers."""

    index: int
    text: str = ""
    thinking: str = ""
    tool_calls: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish: Optional[Finish] = None


def normalize(vector, dimensions=None):
    """The vector cut to `dimensions` (if given), then scaled to unit length."""
    vector = list(vector[:dimensions] if dimensions else vector)
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector] if norm else vector


def collect(events) -> list[Choice]:
    """Gather a whole stream of events into its choices, ordered by index."""
    choices: dict[int, Choice] = {}
    for event in events:
        if isinstance(event, (Accepted, ToolCallArgumentsDelta)):  # the whole call follows its pieces
            continue
        choice = choices.setdefault(event.index, Choice(event.index))
        if isinstance(event, TextDelta):
            choice.text += event.text
            choice.logprobs.extend(event.logprobs)
        elif isinstance(event, ReasoningDelta):
            choice.thinking += event.text
        elif isinstance(event, ToolCallDelta):
            choice.tool_calls.append(event.call)
        elif isinstance(event, Finish):
            choice.finish = event
    return [choices[i] for i in sorted(choices)]


def total_usage(choices) -> Usage:
    """The usage of a request: the prompt once, the completions of all choices added up."""
    return usage_of([c.finish for c in choices if c.finish])


def usage_of(finishes) -> Usage:
    """The usage of a request from its choices' Finish events."""
    if not finishes:
        return Usage()
    return Usage(max(f.usage.prompt_tokens for f in finishes), sum(f.usage.completion_tokens for f in finishes),
                 max(f.usage.cached_tokens for f in finishes), sum(f.usage.reasoning_tokens for f in finishes))
