"""What README.md, docs/*.md and training/README.md tell a reader to type is what the code takes:
each `python -m MODULE [subcommand ...] --flag` names a subcommand and flags its parser has,
each TAILOR_* variable is a setting (`python -m server config-doc`), a keyring's variable or one
the code reads, and the README names every subcommand of `python -m server|training|clients`
and, in its list of gRPC services, every service and RPC of protos/tailor/v1. Parsers are
built in process (a module's own parser is caught as its `main` asks it to parse), so the whole
check takes about two seconds."""
import argparse
import re
import runpy
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "training" / "README.md"]
NOT_OURS = {"pytest", "aiosmtpd", "server.batching.child"}  # others' flags; the child: no command
SHELL = {"&&", ";", ">", ">>", "|", "2>&1", "&"}  # the command ends there


def commands(text: str) -> list[tuple[int, str, str]]:
    """(line, module, the rest) of every `python -m MODULE rest`: in a fenced block, or an
    indented one (4 spaces, no backtick), a line (with its `\\` continuations) up to a `#`
    comment; elsewhere a `code span`."""
    found, fenced, held = [], False, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or held or (line.startswith("    ") and "`" not in line):
            line, held = held + " " + line.strip() if held else line, ""
            if line.rstrip().endswith("\\"):
                held = line.rstrip()[:-1]
                continue
            spans = [line.split(" #", 1)[0]]
        else:
            spans = re.findall(r"`([^`]*)`", line)
        for span in spans:
            found += [(number, m[1], m[2]) for m in re.finditer(r"python -m ([A-Za-z_][\w.]*)(.*)", span)]
    return found


class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def parser_of(module: str) -> argparse.ArgumentParser:
    """`python -m module`'s parser: the CLIs' `build_parser()`, else the parser a module's
    `__main__` code asks to parse, caught before it parses (nothing of the command runs)."""
    if module not in _PARSERS:
        if module in ("server", "clients"):
            _PARSERS[module] = runpy.run_module(f"{module}.__main__")["build_parser"]()
        elif module == "training":
            from training.cli import build_parser
            _PARSERS[module] = build_parser()
        else:
            _PARSERS[module] = _caught_parser(module)
    return _PARSERS[module]


def _caught_parser(module: str) -> argparse.ArgumentParser:
    path = ROOT / Path(*module.split("."))
    source = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    assert source.exists(), f"python -m {module}: no {source.relative_to(ROOT)}"
    if "ArgumentParser(" not in source.read_text():  # not run: a parser of no flag stands in
        return argparse.ArgumentParser(prog=f"python -m {module}", add_help=False)
    original = argparse.ArgumentParser.parse_known_args

    def caught(self, *args, **kwargs):
        raise _Parsed(self)

    argparse.ArgumentParser.parse_known_args = caught
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "found in sys.modules"
            runpy.run_module(module, run_name="__main__")
    except _Parsed as parsed:
        return parsed.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise AssertionError(f"python -m {module} ended without parsing its arguments")


def _subcommands(parser) -> dict:
    return next((a.choices for a in parser._actions
                 if isinstance(a, argparse._SubParsersAction)), {})


def problems(module: str, rest: str) -> list[str]:
    """What `python -m module rest` names that its parser lacks. A placeholder in a
    subcommand's place (`<command>`, `COMMAND`, `...`) stands for any subcommand; `a|b` for
    each of them; a flag must be one of the chosen subcommands' (argparse's abbreviations do
    not count: a reader copies the spelling)."""
    words = rest.split()
    parsers, name = [parser_of(module)], f"python -m {module}"
    while (choices := _subcommands(parsers[0])) and words:
        word = words[0].strip("[]`(),")
        if word.startswith("-") or word in SHELL:
            break
        if word in ("<command>", "COMMAND", "...", "<family>"):
            parsers = list(choices.values())
            words = words[1:]
            break
        picked = word.split("|")
        missing = [w for w in picked if w not in choices]
        if missing and module == "server" and len(parsers) == 1 and "serve" in choices:
            break  # `python -m server --port P`: serve, the default command
        if missing:
            return [f"{name}: no subcommand {missing[0]!r} (it has {', '.join(choices)})"]
        parsers, name, words = [choices[w] for w in picked], f"{name} {word}", words[1:]
    if module == "server" and len(parsers) == 1 and "serve" in _subcommands(parsers[0]):
        parsers = [_subcommands(parsers[0])["serve"]]
    found = []
    for at, word in enumerate(words):
        if word in SHELL and not (word == "|" and words[at + 1:][:1][0:1] and
                                  words[at + 1].startswith("-")):
            break  # a lone | before a flag is an alternative: `--email E | --phone P`
        flag = word.strip("[](),;`").split("=", 1)[0]
        if not re.fullmatch(r"--?[A-Za-z][\w-]*", flag):
            continue
        actions = [p._option_string_actions[flag] for p in parsers
                   if flag in p._option_string_actions]
        if not actions:
            found.append(f"{name}: no flag {flag}")
        elif at + 1 < len(words):
            found += _choices_missing(actions, name, flag, words[at + 1])
    return found + _required_missing(parsers, name, words)


def _choices_missing(actions, name: str, flag: str, value: str) -> list[str]:
    """A value written as its choices (`--format tailor|movielens`) names choices the flag has."""
    shown = value.strip("[](),;`").split("|")
    choices = {str(c) for a in actions for c in (a.choices or ())}
    if len(shown) < 2 or not choices:
        return []
    return [f"{name}: {flag} has no choice {v!r} (it has {', '.join(sorted(choices))})"
            for v in shown if v not in choices]


def _required_missing(parsers, name: str, words: list[str]) -> list[str]:
    """A command shown with flags names its required ones too, unless `...` elides some (a
    `...` after a flag is that flag's value: `--start ... --end ...`)."""
    flags = {w.strip("[](),;`").split("=", 1)[0] for w in words}
    elided = any(w.strip("[]()") == "..." and (at == 0 or not words[at - 1].startswith(("-", "[-")))
                 for at, w in enumerate(words))
    if len(parsers) > 1 or elided or not any(f.startswith("-") for f in flags):
        return []
    return [f"{name}: no {a.option_strings[-1]} (required)" for a in parsers[0]._actions
            if a.required and a.option_strings and not flags & set(a.option_strings)]


def _sections(readme: str):
    """README's interface lists that name their commands without `python -m X`: (module,
    line, code span) for each span of a paragraph headed `... (`python -m X <command> ...`)`."""
    module = None
    for number, line in enumerate(readme.splitlines(), 1):
        if not line.strip():
            module = None
        elif head := re.match(r"\w+ \(`python -m (\w+) <command>", line):
            module = head[1]
        elif module:
            for span in re.findall(r"`([^`]*)`", line):
                yield module, number, span


def test_every_python_m_command_in_the_docs_names_what_its_parser_has():
    found = []
    for doc in DOCS:
        for line, module, rest in commands(doc.read_text()):
            if module not in NOT_OURS and not module.endswith("_"):  # `kernels.bench_<family>`
                found += [f"{doc.relative_to(ROOT)}:{line}: {p}" for p in problems(module, rest)]
    assert not found, "\n".join(found)


def test_the_readme_lists_commands_their_parsers_have():
    readme = (ROOT / "README.md").read_text()
    found, checked = [], 0
    for module, line, span in _sections(readme):
        first = span.split()[0].split("|")[0] if span.split() else ""
        if first in _subcommands(parser_of(module)):
            checked += 1
            found += [f"README.md:{line}: {p}" for p in problems(module, span)]
    assert checked > 20 and not found, "\n".join(found)


def test_the_check_sees_a_flag_or_subcommand_that_is_not_there():
    assert problems("clients", "recommend --user U --top 3") == [
        "python -m clients recommend: no flag --top"]
    assert problems("server", "--port P --dta-dir D") == ["python -m server: no flag --dta-dir"]
    assert problems("training", "demo-data|trian --out D")[0].startswith(
        "python -m training: no subcommand 'trian'")
    assert problems("loadtests.bench", "--items 1000 --durationn 3") == [
        "python -m loadtests.bench: no flag --durationn"]
    assert problems("clients", "consent --user U --channel C --state in|maybe") == [
        "python -m clients consent: --state has no choice 'maybe' (it has in, out)"]
    assert problems("loadtests.gcstats", "/tmp/gc/r2 --all") == [
        "python -m loadtests.gcstats: no flag --all"]  # a module that parses no flags
    assert problems("clients", "<command> --server S --tls-ca CA --nope") == [
        "python -m clients: no flag --nope"]
    assert problems("clients", "attribute --stored --by channel") == [
        "python -m clients attribute: no --model (required)"]
    assert problems("clients", "attribute --stored --by channel ...") == []
    assert problems("clients", "attribute --stored --start ... --end ...") == [
        "python -m clients attribute: no --model (required)"]


def _variables_read_by_the_code() -> set[str]:
    code = "".join(p.read_text() for folder in ("server", "clients", "training", "loadtests",
                                                 "kernels", "contract")
                   for p in (ROOT / folder).rglob("*.py"))
    return set(re.findall(r"TAILOR_[A-Z][A-Z0-9_]*", code + (ROOT / "setup.py").read_text()))


def test_every_tailor_variable_in_the_docs_is_one_the_code_reads():
    from server.config_doc import variables
    from server.security.secrets import KEYRINGS, OPTIONAL_KEYRINGS
    settings = {v for v, _, _ in variables()}
    keyrings = {"TAILOR_SECRET_" + k.upper().replace("-", "_")
                for k in KEYRINGS + OPTIONAL_KEYRINGS}
    read = _variables_read_by_the_code()
    found = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for name in re.findall(r"TAILOR_[A-Z][A-Z0-9_]*", line):
                name = name.rstrip("_")
                if name in settings | keyrings | read or any(
                        s.startswith(name + "_") for s in settings | keyrings):
                    continue  # a prefix: TAILOR_LIMITS__<NAME>, TAILOR_SECRET_<NAME>
                found.append(f"{doc.relative_to(ROOT)}:{number}: {name}")
    assert not found, "not settings (python -m server config-doc), keyrings or read:\n" + "\n".join(
        found)


@pytest.mark.parametrize("proto", sorted((ROOT / "protos" / "tailor" / "v1").glob("*.proto")),
                         ids=lambda p: p.name)
def test_the_readme_names_every_service_and_rpc(proto):
    readme = (ROOT / "README.md").read_text()
    services = readme.split("gRPC services (", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"\w+", services))
    for verbs, last, noun in re.findall(r"((?:[A-Z][a-z]+/)+)([A-Z][a-z]+)([A-Z]\w+)", services):
        named |= {verb + noun for verb in [*verbs.split("/"), last] if verb}  # Add/RemoveX
    text, missing = proto.read_text(), []
    for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.S):
        missing += [service] if service not in named else []
        missing += [f"{service}.{rpc}" for rpc in re.findall(r"rpc (\w+)", body)
                    if rpc not in named]
    assert not missing, f"README.md's gRPC services miss {missing}"


def _paths(parser, path=()):
    for name, sub in _subcommands(parser).items():
        yield (*path, name)
        yield from _paths(sub, (*path, name))


def test_the_readme_names_every_subcommand_of_the_three_clis():
    """README's Interfaces list is where a reader learns what the CLIs do: each subcommand (a
    nested one after its parent, `campaign ... progress|cancel`) is named in a code span."""
    spans = " ".join(re.findall(r"`([^`]*)`", (ROOT / "README.md").read_text()))
    named = set(re.findall(r"[\w-]+", spans))
    missing = [f"python -m {module} {' '.join(path)}" for module in ("server", "training", "clients")
               for path in _paths(parser_of(module)) if path[-1] not in named]
    assert not missing, f"README.md never names {missing}"
