"""record() against collections.namedtuple, which it stands in for on the CGI scan path."""
from __future__ import annotations

import pickle
from collections import namedtuple

import pytest

from qrtrack.config import Settings, load_settings
from qrtrack.records import record
from qrtrack.useragent import ClientInfo


class Point(record("Point", "x y label", defaults=("none",))):
    """A subclass, as the app's modules make them."""

    __slots__ = ()

    @property
    def norm(self) -> int:
        return abs(self.x) + abs(self.y)


NamedPoint = namedtuple("Point", "x y label", defaults=("none",))


@pytest.mark.parametrize(("args", "kwargs"), [
    ((1, 2), {}), ((1, 2, "a"), {}), ((1,), {"y": 2}), ((), {"y": 2, "x": 1, "label": "b"}), ((1, 2), {"label": "c"}),
])
def test_builds_the_same_tuple_as_namedtuple(args, kwargs):
    point, named = Point(*args, **kwargs), NamedPoint(*args, **kwargs)
    assert point == named and tuple(point) == tuple(named) and hash(point) == hash(named)
    assert (point.x, point.y, point.label) == (named.x, named.y, named.label)
    assert repr(point) == repr(named) and Point._fields == NamedPoint._fields
    x, y, label = point
    assert (x, y, label) == tuple(named)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((1,), {}, "missing its argument 'y'"),
    ((1, 2, "a", "extra"), {}, "takes 3 arguments, 4 given"),
    ((1, 2), {"colour": "red"}, "unexpected arguments 'colour'"),
    ((1, 2), {"x": 3}, "more than one value for 'x'"),
])
def test_refuses_what_namedtuple_refuses(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)
    with pytest.raises(TypeError):
        NamedPoint(*args, **kwargs)


def test_is_immutable_and_keeps_its_subclass_behaviour():
    point = Point(3, -4)
    with pytest.raises(AttributeError):
        point.x = 5
    with pytest.raises(AttributeError):
        point.colour = "red"  # __slots__ = (): no instance dict
    assert point.norm == 7 and Point.__doc__ == "A subclass, as the app's modules make them."
    assert Point.__module__ == __name__


def test_pickles_to_an_equal_record_of_the_same_class():
    for value in (Point(1, 2, "p"), ClientInfo("iPhone", "iOS 17", "Safari", False),
                  load_settings(environ={"SECRET_KEY": "k" * 40})):
        copy = pickle.loads(pickle.dumps(value))
        assert copy == value and type(copy) is type(value)


@pytest.mark.parametrize("fields", ["x x", "x _y", "x 1y", "x class-name"])
def test_field_names_must_be_distinct_identifiers_without_a_leading_underscore(fields):
    with pytest.raises(ValueError, match="field names"):
        record("Bad", fields)


def test_settings_default_testing_to_false():
    settings = load_settings(environ={"SECRET_KEY": "k" * 40})
    assert isinstance(settings, Settings) and settings.TESTING is False
    assert Settings(*settings[:-1]).TESTING is False
