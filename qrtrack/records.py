"""Named tuples for the modules a CGI scan imports, made without importing collections.

Anywhere else these would be collections.namedtuple. But under CGI import time is request time, and
collections (with the keyword, operator and reprlib modules it imports) is, with functools, the largest
cost a scan's imports had left: with namedtuple a CGI scan takes 1.26× as long (bench/run.py devices;
hosting.import_sqlite_without_functools keeps sqlite3's C module from importing both). record() makes the
same kind of class for what these modules use of it: a tuple with a read-only property per field, built
from positional or keyword arguments with defaults for the last fields, equal to and hashed as the plain
tuple, pickled, and shown with its field names. namedtuple's _replace, _asdict and _make are left out;
_fields is kept.
"""


def record(typename: str, field_names: str, *, defaults: tuple = ()) -> type:
    """A tuple class named typename with the space-separated field_names; defaults fill the last fields.

    Subclass it, with __slots__ = (), as one would a namedtuple: the subclass gets its module and docstring.
    """
    fields = tuple(field_names.split())
    if len(set(fields)) != len(fields) or not all(name.isidentifier() and not name.startswith("_")
                                                  for name in fields):
        raise ValueError(f"{typename}: field names must be distinct identifiers without a leading _: {fields}")
    if len(defaults) > len(fields):
        raise ValueError(f"{typename}: more defaults than fields")

    def __new__(cls, *args, **kwargs):
        if not kwargs and len(args) == len(fields):  # the usual call, made on every scan: kept short
            return tuple.__new__(cls, args)
        return tuple.__new__(cls, _values(typename, fields, defaults, args, kwargs))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(fields, self, strict=True))
        return f"{type(self).__name__}({shown})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    namespace = {"__slots__": (), "__new__": __new__, "__repr__": __repr__, "__getnewargs__": __getnewargs__,
                 "_fields": fields}
    for index, name in enumerate(fields):
        namespace[name] = property(lambda self, index=index: self[index], doc=f"Field {index}: {name}")
    return type(typename, (tuple,), namespace)


def _values(typename: str, fields: tuple, defaults: tuple, args: tuple, kwargs: dict) -> list:
    """The field values of a call with keywords, defaults or the wrong arguments, in field order."""
    if len(args) > len(fields):
        raise TypeError(f"{typename}() takes {len(fields)} arguments, {len(args)} given")
    first_default = len(fields) - len(defaults)
    values = list(args)
    for index in range(len(args), len(fields)):
        name = fields[index]
        if name in kwargs:
            values.append(kwargs.pop(name))
        elif index >= first_default:
            values.append(defaults[index - first_default])
        else:
            raise TypeError(f"{typename}() is missing its argument {name!r}")
    if kwargs:
        given_twice = [name for name in kwargs if name in fields]
        problem = "got more than one value for" if given_twice else "got unexpected arguments"
        raise TypeError(f"{typename}() {problem} {', '.join(map(repr, given_twice or kwargs))}")
    return values
