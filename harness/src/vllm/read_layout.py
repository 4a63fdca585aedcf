"""Print the engine-core wire layouts of the vLLM importable here, as JSON.

Run by genconform with an install's own interpreter (`python -c`, the text
of this file). Reads each positional struct's fields in declaration order
with their defaults; a field without "default" has none (always on the
wire). A default JSON cannot hold is given as "default_repr" instead, for
genconform to refuse by name. Prints one JSON object on stdout.
"""

import json
import os

# vLLM logs to stdout while it imports: the JSON goes to the real stdout,
# everything else (Python and C alike) to stderr.
json_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

import msgspec  # noqa: E402
import vllm  # noqa: E402
import vllm.v1.engine as engine  # noqa: E402
import vllm.v1.outputs as outputs  # noqa: E402

# msgspec structs declared array_like=True: positional on the wire.
STRUCTS = ["EngineCoreRequest", "EngineCoreOutput", "EngineCoreOutputs", "UtilityOutput"]
# NamedTuples inside EngineCoreOutput: msgspec writes them as full arrays.
TUPLES = ["LogprobsLists", "LogprobsTensors"]


def encodable(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def field(name, default, factory):
    out = {"name": name}
    if factory is not None:
        out["default_factory"] = getattr(factory, "__name__", repr(factory))
        default = factory()
    if default is msgspec.NODEFAULT:
        return out
    if isinstance(default, (set, frozenset, tuple)):
        # msgspec writes these as arrays.
        default = list(default)
    if encodable(default):
        out["default"] = default
    else:
        out["default_repr"] = repr(default)
    return out


def struct_fields(cls):
    return [
        field(
            f.name,
            f.default,
            None if f.default_factory is msgspec.NODEFAULT else f.default_factory,
        )
        for f in msgspec.structs.fields(cls)
    ]


def tuple_fields(cls):
    defaults = cls._field_defaults
    return [
        field(name, defaults.get(name, msgspec.NODEFAULT), None)
        for name in cls._fields
    ]


layout = {
    "vllm_version": vllm.__version__,
    "source": engine.__file__,
    "structs": {name: struct_fields(getattr(engine, name)) for name in STRUCTS},
}
layout["structs"].update(
    {name: tuple_fields(getattr(outputs, name)) for name in TUPLES}
)
# One field a line: a layout file a person reads and edits.
structs = ",\n".join(
    '  %s: [\n%s\n  ]' % (json.dumps(name), ",\n".join("   " + json.dumps(f) for f in fields))
    for name, fields in layout["structs"].items()
)
json_out.write(
    '{\n "vllm_version": %s,\n "source": %s,\n "structs": {\n%s\n }\n}\n'
    % (json.dumps(layout["vllm_version"]), json.dumps(layout["source"]), structs)
)
json_out.flush()
