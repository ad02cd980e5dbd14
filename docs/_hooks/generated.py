"""MkDocs hook: the benchmark pages and the model cards, generated at build time.

* ``benchmarks/<name>.md`` for every ``benchmarks/results/<name>.json``: the run's command, date,
  machine, load and thread count as recorded in the JSON (when the JSON records none: the date of the
  commit that last wrote the file, or "not recorded" in a shallow clone), the report the benchmark script wrote beside it
  (``<name>.md``) and its figure (``<name>.png``), and every figure of the JSON as a flat table.
  Nothing on these pages is typed by hand: rerunning a benchmark and rebuilding updates them.
* ``model-cards/<name>.md`` for every shipped checkpoint ``weightspace/checkpoints/<name>/``: its
  ``README.md`` (the model card its maker wrote) and the fields of its ``config.json``.

The ``Benchmarks`` and ``Model cards`` sections of the navigation are filled here too, so a new
results file or checkpoint appears without editing ``mkdocs.yml``.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.generated")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CHECKPOINTS = ROOT / "weightspace" / "checkpoints"

#: keys whose values describe the run rather than its figures (searched at the top level and one below)
META_KEYS = ("command", "date", "machine", "platform", "processor", "torch", "transformers", "cuda", "threads",
             "load_avg_start", "load_avg_end", "load_average_start", "load_average_end", "load_average_before",
             "load_average_after", "note", "wall_seconds", "total_time_s", "total_s", "seconds", "wall_s")
MAX_ROWS = 600
#: checkpoint format -> (guide page, title): the card links to the guide that uses it
GUIDES = {"weightspace.nowcaster": ("nowcast.md", "Nowcasting"), "weightspace.hypernet": ("hypernetwork.md", "Hypernetwork"),
          "weightspace.ghn": ("hypernetwork.md", "Hypernetwork"),
          "weightspace.predictor": ("predict.md", "Predict accuracy"), "weightspace.diffusion": ("generate.md", "Generate weights")}  # rows of the flat figure table per page; the JSON file itself holds the rest


def _title(name: str) -> str:
    return name.replace("_", " ").replace(".", " - ")


def _commit_date(path: Path) -> str:
    """When the results file was last committed, for files that do not record their date. A shallow
    clone only knows its newest commit, whose date says nothing about the file: then the date is
    reported as not recorded."""
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    try:
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=20, env=env).stdout.strip()
        if shallow != "false":
            return "not recorded in the results file (and the git history is not available to date it)"
        out = subprocess.run(["git", "log", "-1", "--format=%cd", "--date=format:%Y-%m-%d %H:%M UTC", "--",
                              str(path.resolve().relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True,
                             timeout=20, env=env)
        date = out.stdout.strip()
        return f"{date} (commit of the results file)" if date else "not recorded (file not committed)"
    except (OSError, subprocess.SubprocessError):
        return "not recorded in the results file (git not available)"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list)) for x in v):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _meta(data: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    if not isinstance(data, dict):
        return found
    scopes = [data] + [v for k, v in data.items() if k in ("meta", "machine", "config") and isinstance(v, dict)]
    for scope in scopes:
        for k in META_KEYS:
            if k in scope and not isinstance(scope[k], dict) and k not in found:
                found[k] = _fmt(scope[k])
    if isinstance(data.get("machine"), str):
        found["machine"] = data["machine"]
    return found


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, list) and any(isinstance(x, (dict, list)) for x in data):
        for i, v in enumerate(data):
            rows += _flatten(v, f"{prefix}[{i}]")
    else:
        rows.append((prefix, _fmt(data)))
    return rows


def _demote(md: str) -> str:
    """The script's report under the page's section heading: its headings two levels down."""
    out, fence = [], False
    for line in md.splitlines():
        if line.startswith("```"):
            fence = not fence
        out.append("##" + line if not fence and re.match(r"#{1,4} ", line) else line)
    return "\n".join(out)


def benchmark_page(json_path: Path) -> str:
    name = json_path.stem
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"docs hook: {json_path} is not valid JSON ({e}); fix or remove the results file") from e
    meta = _meta(data)
    rel = json_path.resolve().relative_to(RESULTS).as_posix()
    lines = [f"# Benchmark: {_title(name)}", "",
             f"Generated at build time from `benchmarks/results/{rel}`; rerun the command below "
             "and rebuild the docs to update it.", "",
             "| run | recorded |", "|---|---|"]
    meta.setdefault("date", _commit_date(json_path))
    for k in ("command", "date", *[k for k in meta if k not in ("command", "date")]):
        if k in meta:
            v = meta[k]
            lines.append(f"| {k} | {'`' + v + '`' if k == 'command' else v} |")
    lines.append("")
    png = json_path.with_suffix(".png")
    if png.exists():
        lines += [f"![{_title(name)}]({png.name})", ""]
    report = json_path.with_suffix(".md")
    if report.exists():
        lines += ["## Report written by the benchmark", "", _demote(report.read_text()), ""]
    rows = _flatten(data)
    lines += [f"## All figures in `{json_path.name}`", "", f'??? note "{len(rows)} values"', "",
              "    | key | value |", "    |---|---|"]
    lines += [f"    | `{k}` | {v} |" for k, v in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines.append(f"    | ... | {len(rows) - MAX_ROWS} more in the file |")
    return "\n".join(lines) + "\n"


def benchmark_index(names: list[str]) -> str:
    lines = ["# Benchmarks", "",
             "One page per results file in `benchmarks/results/`, generated when the docs are built. Each "
             "page names the command that wrote the file, the date, the machine, the load and the thread "
             "count the file records. The scripts are in `benchmarks/`; every figure quoted in the guides "
             "links here.", ""]
    lines += [f"- [{_title(n)}]({n}.md)" for n in names]
    return "\n".join(lines) + "\n"


def model_card_page(ckpt: Path) -> str:
    name = ckpt.name
    readme = ckpt / "README.md"
    lines: list[str] = []
    if readme.exists():
        text = readme.read_text()
        if not text.lstrip().startswith("# "):
            lines += [f"# Model card: `{name}`", ""]
        lines += [text, ""]
    else:
        lines += [f"# Model card: `{name}`", "",
                  f"`weightspace/checkpoints/{name}/` has no `README.md` model card yet; what its "
                  "`config.json` records follows.", ""]
    cfg = ckpt / "config.json"
    if cfg.exists():
        doc = json.loads(cfg.read_text())
        fmt = doc.get("format", "") if isinstance(doc, dict) else ""
        extras = doc.get("extras", {}) if isinstance(doc, dict) else {}
        lines += ["| recorded | value |", "|---|---|", f"| format | `{fmt or 'unknown'}` |"]
        if isinstance(extras, dict):
            for k, v in extras.items():
                if k == "command" or k == "trained_on" or "val" in k or k in ("steps", "seconds", "train_minutes"):
                    lines.append(f"| {k} | {'`' + str(v) + '`' if k == 'command' else _fmt(v)} |")
            for k, v in (extras.get("final") or {}).items() if isinstance(extras.get("final"), dict) else []:
                lines.append(f"| final {k} | {_fmt(v)} |")
        lines.append("")
        rows = _flatten(doc)
        lines += ["## `config.json`", "", f'??? note "{len(rows)} fields"', "", "    | key | value |",
                  "    |---|---|"]
        lines += [f"    | `{k}` | {v} |" for k, v in rows[:MAX_ROWS]]
        if fmt in GUIDES:
            lines += ["", f"How to use it: [{GUIDES[fmt][1]}](../guides/{GUIDES[fmt][0]})."]
    weights = ckpt / "model.safetensors"
    if weights.exists():
        lines += ["", f"Weights: `model.safetensors`, {weights.stat().st_size / 1024:.0f} kB. Load with "
                  f"`from_pretrained(\"{name}\")` on the class its `config.json` names."]
    return "\n".join(lines) + "\n"


def model_card_index(names: list[str]) -> str:
    lines = ["# Model cards", "",
             "The checkpoints shipped inside the package (`weightspace/checkpoints/<name>/`), loaded by name "
             "with `from_pretrained(\"<name>\")`; `weightspace.list_checkpoints()` lists them. Each card is "
             "the checkpoint's own `README.md` (data, recipe, command, validation figures, intended use, "
             "limits) and its `config.json`, read when the docs are built.", ""]
    lines += [f"- [`{n}`]({n}.md)" for n in names]
    return "\n".join(lines) + "\n"


def _benchmarks() -> list[Path]:
    """Every results file, those in sub-folders (e.g. ``nowcast_variants/``) included."""
    return sorted(RESULTS.rglob("*.json"), key=lambda p: (len(p.relative_to(RESULTS).parts), str(p)))


def _page(p: Path) -> str:
    """``benchmarks/<sub>/<name>.md`` for ``benchmarks/results/<sub>/<name>.json``."""
    return "benchmarks/" + p.relative_to(RESULTS).with_suffix(".md").as_posix()


def _checkpoints() -> list[Path]:
    return sorted(p for p in CHECKPOINTS.iterdir() if p.is_dir() and (p / "config.json").exists())


def _fill_nav(nav: list, title: str, entries: list) -> bool:
    for i, item in enumerate(nav):
        if isinstance(item, dict):
            for k, v in item.items():
                if k == title:
                    nav[i] = {k: entries}
                    return True
                if isinstance(v, list) and _fill_nav(v, title, entries):
                    return True
    return False


def _nav_paths(items: list) -> set[str]:
    found: set[str] = set()
    for item in items:
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            for v in item.values():
                found |= _nav_paths(v) if isinstance(v, list) else {v}
    return found


def _design_notes(nav: list) -> None:
    """Design notes that capability owners add appear in the navigation without editing mkdocs.yml."""
    for item in nav:
        if isinstance(item, dict) and isinstance(item.get("Design notes"), list):
            section = item["Design notes"]
            listed = _nav_paths(section)
            for note in sorted((ROOT / "docs" / "design-notes").glob("*.md")):
                rel = f"design-notes/{note.name}"
                if rel not in listed:
                    first = note.read_text().lstrip().splitlines()[:1]
                    title = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else note.stem
                    section.append({title: rel})
            return


def on_config(config: Any) -> Any:
    if config.nav:
        _design_notes(config.nav)
        top = [_page(p) for p in _benchmarks() if p.parent == RESULTS]
        subs: dict[str, list[str]] = {}
        for p in _benchmarks():
            if p.parent != RESULTS:
                subs.setdefault(p.parent.relative_to(RESULTS).as_posix(), []).append(_page(p))
        bench = top + [{_title(k): v} for k, v in subs.items()]
        cards = [f"model-cards/{p.name}.md" for p in _checkpoints()]
        _fill_nav(config.nav, "Benchmarks", ["benchmarks/index.md", *bench])
        _fill_nav(config.nav, "Model cards", ["model-cards/index.md", *cards])
    return config


def on_files(files: Files, config: Any) -> Files:
    benches = _benchmarks()
    for p in benches:
        files.append(File.generated(config, _page(p), content=benchmark_page(p)))
        png = p.with_suffix(".png")
        if png.exists():
            files.append(File.generated(config, _page(p)[:-3] + ".png", abs_src_path=str(png)))
    names = [p.relative_to(RESULTS).with_suffix("").as_posix() for p in benches]
    files.append(File.generated(config, "benchmarks/index.md", content=benchmark_index(names)))
    ckpts = _checkpoints()
    for p in ckpts:
        files.append(File.generated(config, f"model-cards/{p.name}.md", content=model_card_page(p)))
    files.append(File.generated(config, "model-cards/index.md", content=model_card_index([p.name for p in ckpts])))
    return files
