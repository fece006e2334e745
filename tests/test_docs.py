"""The docs name only what exists: every repository path, every flag of a documented command line, every
config key, every link and image. Read from the Markdown and the scripts' source, no subprocess: seconds."""

import ast
import dataclasses
import glob
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from configurator import TrainConfig
from inheritune import training

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
# Scripts that read TrainConfig's `--key=value` among their own flags, and those that pass the overrides after a
# bare `--` on to train.py.
CONFIG_READERS = {"train.py", "bench.py"}
OVERRIDE_PASSERS = {"recipe.py", "grow.py", "runs.py", "scaling.py"}
REPO_PATH = re.compile(r"(?<![\w./-])((?:config|data|docs|scripts|tests)/[\w.*{},/-]*[\w*}])")
TOP_LEVEL_SCRIPT = re.compile(r"(?<![\w./-])([A-Za-z]\w*\.py)\b")
# A data/ path with none of these endings is a corpus folder, which a prepare script may be about to write.
FILE_SUFFIXES = {".py", ".md", ".json", ".bin", ".pkl", ".tiktoken", ".LICENSE"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FLAGS_OF_CALL = re.compile(r"add_argument\(\s*((?:\"-[^\"]*\"\s*,\s*)+)")
SUB_COMMANDS = re.compile(r"(?:COMMANDS|commands)\s*=\s*\{(.*?)\}", re.S)


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def without_other_projects(text: str) -> str:
    """The text less its web addresses and the text of links to them: a path linked to the web is another
    project's (nanoGPT's `config/train_shakespeare_char.py`)."""
    return re.sub(r"https?://\S+", "", re.sub(r"\[[^\]]*\]\(https?://[^)]*\)", "", text))


def code_blocks(text: str) -> list[str]:
    return CODE_BLOCK.findall(text)


def prose(text: str) -> str:
    return CODE_BLOCK.sub("", text)


def command_lines(text: str) -> list[str]:
    """Each line of the code blocks (continued lines joined) and each inline code span of the prose."""
    lines = []
    for block in code_blocks(text):
        lines += block.replace("\\\n", " ").splitlines()
    return lines + CODE_SPAN.findall(prose(text))


def tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in a prompt: whitespace is enough to find the flags
        return line.split("#")[0].split()


def expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", path)
    if not match:
        return [path]
    return [
        p for choice in match[1].split(",") for p in expand_braces(path[: match.start()] + choice + path[match.end() :])
    ]


def exists(path: str) -> bool:
    return all(glob.glob(str(ROOT / p)) for p in expand_braces(path.rstrip("/.")))


# ----------------------------------------------------------------------------- what the scripts define


@cache
def script_source(script: str) -> str:
    return (ROOT / script).read_text()


def flags_in(source: str) -> set[str]:
    return {flag for call in FLAGS_OF_CALL.findall(source) for flag in re.findall(r'"(--[\w-]+)"', call)}


@cache
def script_flags(script: str) -> frozenset[str]:
    """The flags a script's argparse defines, read from its source; a prepare script that runs data/pipeline.py's
    command line has that one's too."""
    source = script_source(script)
    flags = flags_in(source)
    if re.search(r"from data\.pipeline import [^\n]*\bprepare_main\b", source):
        flags |= flags_in(script_source("data/pipeline.py"))
    return frozenset(flags)


@cache
def sub_commands(script: str) -> frozenset[str]:
    found = SUB_COMMANDS.search(script_source(script))
    return (
        frozenset(re.findall(r'"(\w+)":\s*\(', found[1]))
        if found and "run_command(" in script_source(script)
        else frozenset()
    )


def flag_name(token: str) -> str:
    return token.split("=")[0]


def wrong_words(script: str, args: list[str]) -> list[str]:
    """The flags (and sub-command) of `script args` that the script does not define."""
    wrong = []
    commands = sub_commands(script)
    if commands and args and not args[0].startswith("-") and args[0] not in commands:
        wrong.append(f"command {args[0]!r}")
    after_dashes = False
    for token in args:
        if token == "--":
            after_dashes = True
            continue
        if not token.startswith("--") or token == "--help":
            continue
        flag = flag_name(token)
        if after_dashes and script in OVERRIDE_PASSERS:
            ok = flag[2:] in CONFIG_KEYS
        else:
            ok = flag in script_flags(script) or (script in CONFIG_READERS and flag[2:] in CONFIG_KEYS)
        if not ok:
            wrong.append(token)
    return wrong


def documented_commands(text: str) -> list[tuple[str, list[str]]]:
    """(script, its arguments) of every command line that runs a project script."""
    return [found for line in command_lines(text) for found in documented_commands_in(tokens(line))]


def documented_commands_in(words: list[str]) -> list[tuple[str, list[str]]]:
    """The project script that `words` run, and its arguments (none or one)."""
    for i, word in enumerate(words):
        if word.endswith(".py") and not word.startswith("config/") and (ROOT / word).is_file():
            return [(word, words[i + 1 :])]
    return []


# ----------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_repository_paths_exist(page: Path) -> None:
    text = without_other_projects(page.read_text())
    named = set(REPO_PATH.findall(text)) | {s for s in TOP_LEVEL_SCRIPT.findall(text) if "/" not in s}
    named = {p for p in named if not p.startswith("data/") or Path(p).suffix in FILE_SUFFIXES or "*" in p}
    missing = sorted(p for p in named if "/" in p and not exists(p))
    missing += sorted(p for p in named if "/" not in p and p in top_level_names(text) and not (ROOT / p).exists())
    assert not missing, f"{page_id(page)} names files that do not exist: {missing}"


def top_level_names(text: str) -> set[str]:
    """Top-level script names written as code (`train.py`, or a command's script): a bare name in prose may be
    another project's file (nanoGPT's, the authors')."""
    spans = " ".join(CODE_SPAN.findall(prose(text)) + code_blocks(text))
    return {name for name in TOP_LEVEL_SCRIPT.findall(spans)}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_flags_exist(page: Path) -> None:
    wrong = [
        f"{script} {' '.join(bad)}"
        for script, args in documented_commands(page.read_text())
        if (bad := wrong_words(script, args))
    ]
    assert not wrong, f"{page_id(page)} documents flags its scripts do not define: {wrong}"


def config_key_table() -> list[str]:
    section = (ROOT / "docs/training.md").read_text().split("## Config keys", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return [key for row in rows for key in re.findall(r"`(\w+)`", row)]


def test_config_key_table_is_trainconfig() -> None:
    table = config_key_table()
    assert not set(table) - CONFIG_KEYS, f"keys in the table that TrainConfig lacks: {sorted(set(table) - CONFIG_KEYS)}"
    assert not CONFIG_KEYS - set(table), f"TrainConfig keys missing from the table: {sorted(CONFIG_KEYS - set(table))}"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", prose(page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_and_images_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page_id(page)} has links that resolve to nothing: {broken}"


def test_readme_lists_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    unlisted = [page_id(p) for p in PAGES[1:] if f"]({page_id(p)})" not in readme]
    assert not unlisted, f"README's index of the docs lacks {unlisted}"


def test_the_checks_see_a_wrong_flag_key_and_path() -> None:
    text = "```\npython recipe.py --reference r --n_layers 4 -- --max_iter=5\n```\nsee `config/nothing.py`\n"
    assert [wrong_words(s, a) for s, a in documented_commands(text)] == [["--n_layers", "--max_iter=5"]]
    assert wrong_words("evaluation.py", ["score", "--model", "m"]) == ["command 'score'"]
    assert wrong_words("sample.py", ["--init_from=resume"]) == []
    assert not exists("config/nothing.py") and exists("config/scratch_gpt2_{medium_16,large_18}.py")


SCRIPTS = sorted(p for p in [*ROOT.glob("*.py"), *ROOT.glob("data/**/*.py"), *ROOT.glob("scripts/*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=page_id)
def test_module_docstring_paths_and_flags_exist(script: Path) -> None:
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    missing = [p for p in REPO_PATH.findall(doc) if Path(p).suffix in FILE_SUFFIXES and not exists(p)]
    assert not missing, f"{page_id(script)}'s docstring names files that do not exist: {missing}"
    lines = doc.replace("\\\n", " ").splitlines()
    commands = [tokens(line) for line in lines if line.lstrip().startswith(("python ", "torchrun "))]
    wrong = [bad for words in commands for s, a in documented_commands_in(words) if (bad := wrong_words(s, a))]
    assert not wrong, f"{page_id(script)}'s docstring documents flags its scripts do not define: {wrong}"


# The scripts of an option table under a heading that names none.
PAGE_SCRIPTS = {
    "docs/analyze.md": ("analyze.py",),
    "docs/data.md": ("data/openwebtext/prepare.py", "data/fineweb_edu/prepare.py"),
}


def option_tables(page: Path) -> list[tuple[tuple[str, ...], set[str]]]:
    """(scripts, the flags its rows name) of each table of `--options` on the page; the script is the one its
    heading names, or the page's."""
    tables: list[tuple[tuple[str, ...], set[str]]] = []
    scripts, in_table = PAGE_SCRIPTS.get(page_id(page), ()), False
    for line in prose(page.read_text()).splitlines():
        if line.startswith("#"):
            named = [w for w in re.findall(r"`([\w/]+\.py)`", line) if (ROOT / w).is_file()]
            scripts = (named[0],) if named else PAGE_SCRIPTS.get(page_id(page), ())
        row = line.startswith("| `--")
        if row and not in_table:
            tables.append((scripts, set()))
        if row:
            tables[-1][1].update(re.findall(r"`(--\w+)`", line.split("|")[1]))
        in_table = row
    return tables


@cache
def flag_groups(script: str) -> tuple[frozenset[str], ...]:
    """The flags of each add_argument call: an alias (sample.py's --init_from of --model) shares a row."""
    return tuple(frozenset(re.findall(r'"(--[\w-]+)"', call)) for call in FLAGS_OF_CALL.findall(script_source(script)))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_option_tables_list_every_flag_of_their_script(page: Path) -> None:
    wrong = []
    for scripts, rows in option_tables(page):
        undefined = sorted(rows.difference(*(script_flags(s) for s in scripts)))
        missing = sorted(min(g) for s in scripts for g in flag_groups(s) if g and not g & rows)
        if undefined or missing:
            wrong.append(f"{', '.join(scripts)}: not defined {undefined}, missing {missing}")
    assert not wrong, f"{page_id(page)}'s option tables: {wrong}"


def test_the_key_table_names_every_key_a_resume_keeps() -> None:
    """init_from's row lists what a resume refuses to change: train.py's MODEL_KEYS, and block_size (AdamW's
    moments of the position embedding have the run's positions)."""
    table = (ROOT / "docs/training.md").read_text().split("| `init_from` |", 1)[1].split("\n", 1)[0]
    refused = set(re.findall(r"`(\w+)`", table.split("a config asking for another", 1)[1].split("is refused")[0]))
    assert refused == {*training.MODEL_KEYS, "block_size"}


def same_value(written: str, default: object) -> bool:
    if written in (str(default), repr(default)) or (written == '""' and default == ""):
        return True
    try:
        return float(written) == default
    except ValueError:
        return False


def test_the_key_table_gives_trainconfig_s_defaults() -> None:
    defaults = dataclasses.asdict(TrainConfig())
    section = (ROOT / "docs/training.md").read_text().split("## Config keys", 1)[1].split("\n## ", 1)[0]
    wrong = []
    for line in (row for row in section.splitlines() if row.startswith("| `")):
        keys_cell, default_cell = line.split("|")[1:3]
        keys, values = re.findall(r"`(\w+)`", keys_cell), [v.strip().strip("`") for v in default_cell.split(",")]
        wrong += [
            f"{k}: {v} (is {defaults[k]!r})"
            for k, v in zip(keys, values, strict=True)
            if not same_value(v, defaults[k])
        ]
    assert not wrong, f"training.md's key table: {wrong}"


# The pages that hold what the tests check and what was measured; every other page is a guide, which links to them.
INVENTORY_PAGES = {"docs/tests.md", "docs/measurements.md"}
NODE_ID = re.compile(r"tests/\w+\.py::")


@cache
def suite_test_names() -> frozenset[str]:
    """The names of the suite's test functions, read from its source."""
    return frozenset(
        node.name
        for path in (ROOT / "tests").glob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    )


def named_tests(text: str) -> list[str]:
    """The pytest node ids and test function names a text names: a test inventory, which belongs in tests.md."""
    return NODE_ID.findall(text) + sorted(set(re.findall(r"\btest_\w+", text)) & suite_test_names())


@pytest.mark.parametrize("page", [p for p in PAGES if page_id(p) not in INVENTORY_PAGES], ids=page_id)
def test_guides_name_no_test(page: Path) -> None:
    named = named_tests(page.read_text())
    assert not named, f"{page_id(page)} names tests (they belong in docs/tests.md, linked from the guide): {named}"


def test_the_check_sees_a_named_test_and_not_a_flag() -> None:
    text = "resumes exactly (`tests/test_train.py::\ntest_resume_continues_exactly`); `--test_size`, `test_size`"
    assert named_tests(text) == ["tests/test_train.py::", "test_resume_continues_exactly"]


def test_the_modules_page_names_every_top_level_module() -> None:
    page = (ROOT / "docs/model.md").read_text()
    unnamed = [p.name for p in sorted(ROOT.glob("*.py")) if f"`{p.name}`" not in page]
    assert not unnamed, f"docs/model.md does not say what {unnamed} hold"
