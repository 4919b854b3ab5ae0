"""generation.quick_init: a frozen dataclass's quicker __init__ takes and refuses the same arguments and makes the same
instances as the one dataclasses writes."""
import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from shim import generation as g
from shim.generation import quick_init


def both(body):
    """The same class twice: with dataclasses' own __init__, and with quick_init's."""
    plain = dataclass(frozen=True)(type("Plain", (), dict(body)))
    quick = quick_init(dataclass(frozen=True)(type("Quick", (), dict(body))))
    return plain, quick


BODY = {"__annotations__": {"a": int, "b": str, "c": list, "d": dict},
        "b": "bee", "c": field(default_factory=list), "d": field(default_factory=lambda: {"k": 1})}

CALLS = [((1,), {}), ((1, "x"), {}), ((1, "x", [2], {}), {}), ((), {"a": 1, "d": {}}), ((1,), {"c": None}),
         ((), {}), ((1, 2, 3, 4, 5), {}), ((1,), {"a": 2}), ((1,), {"e": 0}), ((), {"b": "x"})]


@pytest.mark.parametrize("args,kwargs", CALLS)
def test_the_same_arguments_make_the_same_instance_or_the_same_error(args, kwargs):
    plain, quick = both(BODY)

    def made(cls):
        try:
            return dataclasses.asdict(cls(*args, **kwargs))
        except TypeError as err:
            return "TypeError", str(err).replace(cls.__qualname__ + ".", "")
    assert made(quick) == made(plain)


def test_instances_stay_frozen_hashable_and_get_fresh_defaults():
    _, quick = both(BODY)
    one, two = quick(1), quick(1)
    assert one == two and hash(quick(1, "x", None, None)) == hash(quick(1, "x", None, None))
    assert one.c is not two.c and one.d is not two.d
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2
    assert repr(one) == "Quick(a=1, b='bee', c=[], d={'k': 1})"
    assert list(inspect.signature(quick).parameters) == ["a", "b", "c", "d"]


def test_classes_it_cannot_speed_up_keep_their_own_init():
    for body in ({"__annotations__": {"a": int}, "__post_init__": lambda self: None},
                 {"__annotations__": {"a": int, "b": int}, "b": field(default=0, init=False)},
                 {"__annotations__": {"a": int}, "a": field(kw_only=True)}):
        cls = dataclass(frozen=True)(type("Kept", (), dict(body)))
        own = cls.__init__
        assert quick_init(cls).__init__ is own


def test_the_contracts_classes_have_it():
    assert "self.__dict__.update" not in inspect.getsource(g.Message)  # written by quick_init, not in the source
    for cls in (g.GenerationRequest, g.Message, g.TextDelta, g.Finish, g.Usage, g.Timings, g.Sampling):
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert cls.__init__.__code__.co_filename == "<string>" and "update" in cls.__init__.__code__.co_names
    request = g.GenerationRequest(model="m", messages=(g.Message("user", "hi"),))
    assert request.sampling == g.Sampling() and request.tool_choice == g.ToolChoice() and request.n == 1
