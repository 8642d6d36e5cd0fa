"""docs/api.md and the code agree: every name it cites exists, and every parameter list it writes out is the real
one, so a rename or a changed signature fails here until the doc follows.

The doc stays prose; this test reads it the way a user does. A code span is checked when it is
- a dotted name from `imbsam` (`imbsam.optim.StepParts`, `imbsam.registry.names(kind)`): it must exist;
- a call written bare (`module(kind, name)`): it must exist in its context, the last class or module named
  earlier in the same paragraph or list item, else the module or folder of the section's heading
  (`imbsam/optim.py`; `imbsam/optimizers/<name>.py`: any of the folder's modules, at top level or on a class);
- `python -m imbsam.<module>`: the module must exist.
A call's parameters, written as Python parameters, must be the real ones: names, order, `*`, `**` and defaults;
for a module of a `<name>` folder (each optimizer's `make_step`, ...), the named ones must lead each module's.
`(...)`, or a list that is not Python (`stats("save" | "restore")`), checks the name only.
"""

import ast
import builtins
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from imbsam import params as schema

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "api.md"
# Calls the doc writes for callables with no fixed home: what make_step and make_loss return.
DESCRIBED = {"step", "loss_fn", "start_epoch"}
SPAN = re.compile(r"`([^`]+)`")
CALL = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(?:\((?P<args>.*?)\))?(?:\s*->.*)?$", re.DOTALL)
COMMAND = re.compile(r"^python -m (imbsam[\w.]*)")
PATH = re.compile(r"`(imbsam/[\w/<>.]*)`")
PYFILE = re.compile(r"^imbsam/[\w/]+\.py$")
PARAMS_KEYS = set(schema.flatten(schema.file_defaults()))


def blocks(text):
    """(heading, block text) per paragraph or list item, each under the heading it follows."""
    heading, current, out = "", [], []
    for line in text.splitlines() + [""]:
        starts = not line.strip() or line.startswith("#") or re.match(r"(- |\d+\. )", line)
        if starts and current:
            out.append((heading, " ".join(current)))
            current = []
        if line.startswith("#"):
            heading = line
        elif line.strip():
            current.append(line.strip())
    return out


def module_or_none(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if name == error.name or name.startswith(f"{error.name}."):
            return None
        raise


def resolve_dotted(dotted):
    """(module, object) of `dotted`: its longest importable module prefix, then attributes; object None if none."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = module_or_none(".".join(parts[:cut]))
        if module is None:
            continue
        found = module
        for attribute in parts[cut:]:
            found = getattr(found, attribute, None)
            if found is None:
                break
        return module, found
    return None, None


def attribute(owner, name):
    """owner's `name`, or None; a class's instance attribute (set as self.<name> in its code) as its description,
    whose name is all the test can check."""
    if hasattr(owner, name):
        return getattr(owner, name)
    if inspect.isclass(owner) and re.search(rf"\bself\.{name}\s*=", inspect.getsource(owner)):
        return f"{owner.__name__}().{name}"
    return None


def section_homes(heading):
    """The modules a heading's `imbsam/...` path names: one, or every module of a `<name>` folder."""
    found = PATH.search(heading)
    if not found:
        return []
    path = found[1]
    if "<name>" in path:
        folder = REPO / path.split("<name>")[0]
        return [importlib.import_module(".".join(p.relative_to(REPO).with_suffix("").parts))
                for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")]
    return [importlib.import_module(path.removesuffix(".py").removesuffix("/").replace("/", "."))]


def in_modules(modules, name):
    """What `name` is in these modules, at top level or on a class they define."""
    hits = []
    for module in modules:
        if hasattr(module, name):
            hits.append(getattr(module, name))
            continue
        hits += [getattr(cls, name) for cls in vars(module).values()
                 if inspect.isclass(cls) and cls.__module__ == module.__name__ and name in vars(cls)]
    return hits


def documented(args):
    """The parameters written in a doc's call, as (name, kind, default source), or None if not Python."""
    try:
        spec = ast.parse(f"def f({args}): pass").body[0].args
    except SyntaxError:
        return None
    plain = spec.posonlyargs + spec.args
    defaults = [None] * (len(plain) - len(spec.defaults)) + [ast.unparse(d) for d in spec.defaults]
    out = [(a.arg, "positional", d) for a, d in zip(plain, defaults)]
    if spec.vararg:
        out.append((spec.vararg.arg, "*", None))
    out += [(a.arg, "keyword", None if d is None else ast.unparse(d))
            for a, d in zip(spec.kwonlyargs, spec.kw_defaults)]
    if spec.kwarg:
        out.append((spec.kwarg.arg, "**", None))
    return out


KINDS = {inspect.Parameter.POSITIONAL_ONLY: "positional", inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
         inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.KEYWORD_ONLY: "keyword",
         inspect.Parameter.VAR_KEYWORD: "**"}


def real(obj):
    """The real parameters of obj as (name, kind, default), `self` left out."""
    parameters = list(inspect.signature(obj).parameters.values())
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    return [(p.name, KINDS[p.kind], p.default) for p in parameters]


def same_default(written, value, obj):
    """Whether a default written in the doc (Python source) is the real one: a literal, or a name in obj's
    module (`modes=STEP_MODES`) or a builtin (`log=print`)."""
    if written is None or value is inspect.Parameter.empty:
        return written is None and value is inspect.Parameter.empty
    try:
        return ast.literal_eval(written) == value
    except ValueError:
        named = getattr(inspect.getmodule(obj), written, getattr(builtins, written, inspect.Parameter.empty))
        return named is value or named == value


def mismatch(written, obj, leading=False):
    """Why the doc's parameters are not obj's, or None. leading: only its named ones, leading obj's."""
    actual = real(obj)
    if leading:
        names = [name for name, kind, _ in written if kind not in ("*", "**")]
        return None if [name for name, _, _ in actual[:len(names)]] == names else \
            f"its parameters start with {[name for name, _, _ in actual[:len(names)]]}, not {names}"
    if [(n, k) for n, k, _ in written] != [(n, k) for n, k, _ in actual]:
        return f"the code's parameters are ({', '.join(n for n, _, _ in actual)})"
    for (name, _, default), (_, _, value) in zip(written, actual):
        if not same_default(default, value, obj):
            return f"{name}'s default is {value!r}, not {default}"
    return None


def check_call(where, shown, obj, args, leading=False):
    if obj is None:
        return [f"{where}: `{shown}` is not in the code"]
    if args is None or not callable(obj):
        return []
    written = documented(args)
    problem = written is not None and mismatch(written, obj, leading)
    return [f"{where}: `{shown}`: {problem}"] if problem else []


def check(text):
    """Every disagreement between the doc's text and the code, one line each."""
    problems = []
    for heading, block in blocks(text):
        where = f"{heading.strip('# ')} | {block[:50]}..."
        homes = section_homes(heading)
        named, implied = [], []  # the classes and modules the block names, latest first; its functions' modules
        for span in SPAN.findall(block):
            command = COMMAND.match(span)
            if command:
                if importlib.util.find_spec(command[1]) is None:
                    problems.append(f"{where}: `{span}`: no module {command[1]}")
                continue
            if PYFILE.match(span):
                named.insert(0, importlib.import_module(span.removesuffix(".py").replace("/", ".")))
                continue
            call = CALL.match(span.strip())
            if not call or call["name"] in PARAMS_KEYS or span.endswith(".py"):
                continue
            name, args = call["name"], call["args"]
            if name.startswith("imbsam."):
                module, obj = resolve_dotted(name)
                problems += check_call(where, span, obj, args)
                if module is not None:
                    named.insert(0, module)
            elif "." in name:
                continue
            else:
                protocol = len(homes) > 1
                explicit = [hit for hit in (attribute(c, name) for c in named) if hit is not None]
                in_homes = [] if explicit else in_modules(homes, name)
                implicit = [hit for hit in (attribute(c, name) for c in implied) if hit is not None]
                if in_homes:
                    obj = in_homes[0]
                    for hit in in_homes:
                        problems += check_call(where, span, hit, args, leading=protocol)
                    if protocol:
                        continue
                elif explicit or implicit:
                    obj = (explicit or implicit)[0]
                    problems += check_call(where, span, obj, args)
                else:
                    obj = None
                    if args is not None and name not in DESCRIBED:
                        problems.append(f"{where}: `{span}` is neither in {[c.__name__ for c in named + implied]} "
                                        f"nor in the modules of the heading {[m.__name__ for m in homes]}")
            if inspect.isclass(obj) or inspect.ismodule(obj):
                named.insert(0, obj)
            elif inspect.isfunction(obj) or inspect.ismethod(obj):
                implied.append(inspect.getmodule(obj))
    return problems


def test_every_name_and_signature_in_api_md_is_the_codes():
    problems = check(DOC.read_text())
    assert not problems, "docs/api.md disagrees with the code:\n" + "\n".join(problems)


@pytest.mark.parametrize(("line", "problem"), [
    ("- `imbsam.registry.names(kind, sort=True)`: x", "the code's parameters are (kind)"),
    ("- `imbsam.registry.listing(kind)`: x", "is not in the code"),
    ("- `imbsam.data.split.longtail_counts(num_classes, max_per_class, imb_factor, profile=\"step\")`: x",
     "profile's default is 'exp', not 'step'"),
    ("- `imbsam.registry.names(kind)`: x; `modules(name)` y", "the code's parameters are (kind)"),
    ("## Parameters: `imbsam/params.py`\n\n- `loads(path)`: x", "nor in the modules of the heading"),
    ("### An optimizer: `imbsam/optimizers/<name>.py`\n\n- `make_step(network, **options)`: x",
     "its parameters start with ['parts'], not ['network']"),
    ("- `python -m imbsam.matrices --dry-run`: x", "no module imbsam.matrices"),
])
def test_a_doc_that_drifted_from_the_code_fails(line, problem):
    problems = check(line)
    assert problems and problem in problems[0], problems
