"""The documentation stays true: docs/architecture.md's examples run and its layer table matches
the imports, docs/benchmarks.md is rendered from the benchmark results, and every section of
docs/reference.md that the code cites exists.

An example is a fenced ``python`` block directly preceded by a ``<!-- test -->`` line; the
examples of one section (a ``##`` or ``###`` heading) run in order in one fresh namespace, so a
later block may use what an earlier one defined. Blocks without the marker are illustrations
(source edits, commands) and are not run.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import lightning
import pytest

from lightning_pspc.commands import evaluate as eval_command
from lightning_pspc.denoisers import REFERENCE_DENOISERS
from lightning_pspc.evaluation import EvalData, Evaluation
from lightning_pspc.evaluation import settings as eval_settings
from lightning_pspc.evaluation.settings import EvalError
from lightning_pspc.module import DiffusionModule
from tests.helpers import TinyNet, tiny_datamodule

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"
REFERENCE = REPO / "docs" / "reference.md"
PACKAGE = REPO / "lightning_pspc"
MARKER = "<!-- test -->"


@dataclass(frozen=True)
class Block:
    """A runnable ``python`` block: its code and the line of the doc its code starts on (1-based)."""

    code: str
    line: int


def runnable_sections(text: str) -> dict[str, list[Block]]:
    """``{heading: [runnable blocks in order]}`` of a Markdown text (headings ``##``/``###``)."""
    sections: dict[str, list[Block]] = defaultdict(list)
    lines = text.splitlines()
    heading, i = "(top)", 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"#{2,3} ", line):
            heading = line.lstrip("#").strip()
        elif line.strip() == MARKER and lines[i + 1 : i + 2] != ["```python"]:
            raise AssertionError(f"line {i + 1}: {MARKER} is not directly before a ```python block")
        elif line.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if i > 0 and lines[i - 1].strip() == MARKER:
                sections[heading].append(Block("\n".join(lines[i + 1 : end]), i + 2))
            i = end
        i += 1
    return dict(sections)


SECTIONS = runnable_sections(ARCHITECTURE.read_text())


@cache
def run_section(heading: str) -> dict[str, Any]:
    """Run the examples of ``heading`` in one fresh namespace; returns the namespace.

    The namespace is a module registered in ``sys.modules`` (as for a script: dataclasses and
    pickling look classes up there); what the examples register globally (reference names) is
    undone afterwards."""
    name = "docs_architecture_" + re.sub(r"\W+", "_", heading).strip("_").lower()
    module = sys.modules[name] = types.ModuleType(name)
    with mock.patch.dict(REFERENCE_DENOISERS):
        for block in SECTIONS[heading]:
            # padded so that tracebacks name the line of docs/architecture.md; no __future__
            # import of this file leaks into the example (dont_inherit)
            source = "\n" * (block.line - 1) + block.code
            code = compile(source, str(ARCHITECTURE), "exec", dont_inherit=True)
            exec(code, module.__dict__)  # noqa: S102
    return module.__dict__


def test_marked_blocks_are_found_and_a_stray_marker_is_an_error():
    text = "## A\n<!-- test -->\n```python\nx = 1\n```\n```python\nnot run\n```\n### B\n"
    text += "<!-- test -->\n```python\ny = 2\n```\n"
    assert runnable_sections(text) == {"A": [Block("x = 1", 4)], "B": [Block("y = 2", 12)]}
    with pytest.raises(AssertionError, match="line 2"):
        runnable_sections("## A\n<!-- test -->\n\n```python\nx = 1\n```\n")


def test_the_examples_are_found():
    assert {"One denoiser contract", "A closed-form denoiser", "A metric"} <= set(SECTIONS)
    assert "An evaluation member" in SECTIONS and len(SECTIONS["An evaluation member"]) == 2


@pytest.mark.parametrize("heading", sorted(SECTIONS))
def test_example_runs(heading, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a Trainer in an example writes nothing into the repository
    before = dict(REFERENCE_DENOISERS)
    run_section(heading)
    assert REFERENCE_DENOISERS == before


def eval_py_settings(*flags: str) -> eval_settings.EvalSettings:
    """The settings ``eval.py --ckpt run/last.ckpt --out out FLAGS`` runs with."""
    args = eval_command.parse_args(["--ckpt", "run/last.ckpt", "--out", "out", *flags])
    return eval_command.settings_from_args(args)


def test_registered_reference_is_an_eval_py_reference():
    """The closed-form example's registry entry is what makes ``--references mean`` valid."""
    mean_denoiser = run_section("A closed-form denoiser")["MeanDenoiser"]
    settings = eval_py_settings("--references", "empirical", "mean")
    with pytest.raises(EvalError, match="mean"):
        settings.check()
    with mock.patch.dict(REFERENCE_DENOISERS, mean=mean_denoiser):
        settings.check()


def test_option_group_in_groups_gives_eval_py_its_flag_and_member(tmp_path, monkeypatch):
    """The member example's claim: its option group in ``GROUPS`` is an ``eval.py`` flag that
    builds the member, is checked, and is written into ``metrics.json``'s settings."""
    monkeypatch.chdir(tmp_path)
    ns = run_section("An evaluation member")
    output_norm, groups = ns["OutputNorm"], (*eval_settings.GROUPS, ns["OutputNormOptions"])
    # eval.py's module holds its own reference to the tuple: patch both, as editing the source does
    monkeypatch.setattr(eval_settings, "GROUPS", groups)
    monkeypatch.setattr(eval_command, "GROUPS", groups)
    settings = eval_py_settings("--num-norm-probes", "3")
    settings.check()
    assert [m.num_probes for m in settings.members() if isinstance(m, output_norm)] == [3]
    assert settings.flat()["num_norm_probes"] == 3
    off = eval_py_settings("--num-norm-probes", "0")
    assert not [m for m in off.members() if isinstance(m, output_norm)]
    with pytest.raises(EvalError, match="--num-norm-probes -1"):
        eval_py_settings("--num-norm-probes=-1").check()


def test_member_callback_measures_the_ema_denoiser_every_epoch(tmp_path, monkeypatch):
    """The member example's callback, in a fit: one evaluation per epoch, logged under its
    prefix, equal to the member on the EMA denoiser afterwards (the same seeded probes)."""
    monkeypatch.chdir(tmp_path)
    ns = run_section("An evaluation member")
    sigmas = [1e4, 1.0, 0.002]
    monitor = ns["OutputNormMonitor"](sigmas=sigmas, log_images=False, progress=False)
    datamodule = tiny_datamodule(num_train=16, num_heldout=8, batch_size=8)
    module = DiffusionModule(TinyNet())
    trainer = lightning.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    )
    trainer.fit(module, datamodule=datamodule)
    history = monitor.histories["output_norm"]
    assert [epoch for epoch, _ in history] == [1, 2]
    assert history[0][1]["rms"] != history[1][1]["rms"]  # the network changed in between
    data = EvalData.from_datamodule(datamodule)
    after = Evaluation(data, [ns["OutputNorm"](num_probes=4)], sigmas=sigmas)
    rms = after.evaluate(module.denoiser)["output_norm"].rms
    assert history[1][1]["rms"] == pytest.approx(rms.tolist(), rel=1e-6)
    logged = trainer.callback_metrics["output_norm/rms/sigma_1"]
    assert float(logged) == pytest.approx(float(rms[1]), rel=1e-6)


# --- the layer table ---------------------------------------------------------------------------


def documented_layers(text: str) -> dict[str, tuple[int, set[str], set[str]]]:
    """``{package: (layer, imports, lazy imports)}`` from the table under ``## Layers``."""
    body = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        layer, package, _, imports = cells
        names = re.findall(r"`(\w+)`( \(lazily\))?", imports)
        rows[package.strip("`")] = (
            int(layer),
            {n for n, _ in names},
            {n for n, lazy in names if lazy},
        )
    return rows


def actual_imports(package: Path = PACKAGE) -> dict[tuple[str, str], set[str]]:
    """``{(module, imported module): kinds}`` of every import between the top-level modules and
    subpackages of ``package`` (relative, or absolute from ``package.name``); a kind is ``top``
    or ``lazy`` (inside a function or under ``if TYPE_CHECKING``)."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)

    def top(parts: list[str]) -> str:
        return parts[0].removesuffix(".py")

    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).parts)
        if parts == ["__init__.py"]:
            continue
        tree = ast.parse(path.read_text())
        lazy_nodes = set()
        for node in ast.walk(tree):
            typing_only = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            if typing_only or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lazy_nodes |= {id(n) for n in ast.walk(node) if n is not node}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                # as a dotted path below ``package``: relative, or absolute from its name
                first = node.names[0].name
                if node.level:
                    base = parts[: len(parts) - node.level]
                    target = base + (node.module.split(".") if node.module else [first])
                elif node.module == package.name:
                    target = [first]
                elif (node.module or "").startswith(package.name + "."):
                    target = node.module.split(".")[1:]
                else:
                    continue
            elif isinstance(node, ast.Import):
                inside = [a.name for a in node.names if a.name.startswith(package.name + ".")]
                if not inside:
                    continue
                target = inside[0].split(".")[1:]
            else:
                continue
            if top(target) != top(parts):
                kind = "lazy" if id(node) in lazy_nodes else "top"
                edges[(top(parts), top(target))].add(kind)
    return edges


def test_layer_table_matches_the_imports():
    table = documented_layers(ARCHITECTURE.read_text())
    edges = actual_imports()
    packages = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()}
    packages -= {"__init__", "__pycache__"}
    assert set(table) == packages, "every package has one row in the layer table"
    actual = defaultdict(set)
    for src, dst in edges:
        actual[src].add(dst)
    for package, (layer, imports, lazy) in table.items():
        assert actual[package] == imports, f"{package}: its row's 'imports from' column"
        for dst in imports:
            kinds = edges[(package, dst)]
            if dst in lazy:
                assert kinds == {"lazy"}, f"{package} -> {dst} is marked lazily but is not"
            else:
                assert table[dst][0] < layer, f"{package} (layer {layer}) imports {dst} upwards"


def test_import_scan_resolves_relative_absolute_and_lazy_imports(tmp_path):
    """The scan behind the layer check, on a made-up package."""
    files = {
        "a.py": "",
        "b/__init__.py": "from ..a import x\n",  # b -> a
        "b/c/d.py": "from ...e import y\nfrom ..z import w\n"  # b -> e; b/z is b itself
        "def f():\n    from ...f import q\n",  # b -> f, in a function
        "g.py": "from typing import TYPE_CHECKING\nimport pkg.a\n"  # g -> a, absolute
        "if TYPE_CHECKING:\n    from .b import t\n",  # g -> b, typing only
        "h.py": "from . import a\nfrom .g import u\nfrom pkg import b\n",  # h -> a, g, b
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    assert actual_imports(tmp_path / "pkg") == {
        ("b", "a"): {"top"},
        ("b", "e"): {"top"},
        ("b", "f"): {"lazy"},
        ("g", "a"): {"top"},
        ("g", "b"): {"lazy"},
        ("h", "a"): {"top"},
        ("h", "b"): {"top"},
        ("h", "g"): {"top"},
    }


# --- benchmarks.md and reference.md -------------------------------------------------------------


def test_benchmarks_md_is_rendered_from_the_results():
    done = subprocess.run(
        [sys.executable, "benchmarks/render.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


CITATION = re.compile(
    r"docs/reference\.md,?\s+(?:sections?\s+)?"
    r"(\d+[a-z]?(?:\.\d+)?(?:(?:\s*,\s*|\s+and\s+)\d+[a-z]?(?:\.\d+)?)*)"
)


def cited_sections() -> dict[str, set[str]]:
    """``{section number: {files citing it}}`` of the citations ``docs/reference.md section 2.3``
    (also ``sections 3 and 3b``, ``3.2, 3.3``, ``docs/reference.md 3b``) across line breaks of
    docstrings and comments, in the package, benchmarks, scripts, tests and docs."""
    cited: dict[str, set[str]] = defaultdict(set)
    files = [*REPO.glob("*.py"), *REPO.glob("*.md")]
    for folder in ("lightning_pspc", "benchmarks", "scripts", "tests", "docs"):
        files += [*(REPO / folder).rglob("*.py"), *(REPO / folder).rglob("*.md")]
    for path in files:
        if path in (REFERENCE, Path(__file__).resolve()):  # this file quotes made-up ones
            continue
        # one line of text: comment markers and line breaks between the words removed
        text = re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", path.read_text())
        for match in CITATION.finditer(text):
            for number in re.split(r"\s*,\s*|\s+and\s+", match.group(1)):
                cited[number].add(str(path.relative_to(REPO)))
    return cited


def reference_sections() -> set[str]:
    """The numbers of docs/reference.md's headings (``## 3b. Locality`` -> ``3b``)."""
    heads = re.findall(r"^#{2,6}\s+(\d+[a-z]?(?:\.\d+)?)\.?\s", REFERENCE.read_text(), re.M)
    return set(heads)


def test_cited_reference_sections_exist():
    cited, present = cited_sections(), reference_sections()
    assert {"2", "2.9", "3", "3b"} <= set(cited)  # the scan finds the code's citations
    missing = {n: sorted(files) for n, files in cited.items() if n not in present}
    assert not missing, f"sections cited but not headings of docs/reference.md: {missing}"


def test_citation_scan_reads_the_forms_the_code_uses():
    text = "see docs/reference.md sections 3.2,\n    #: 3.3 and 3b and docs/reference.md 2.6"
    text = re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", text)
    found = [n for m in CITATION.finditer(text) for n in re.split(r"\s*,\s*|\s+and\s+", m[1])]
    assert found == ["3.2", "3.3", "3b", "2.6"]
