"""Provenance: what produced a run, and what differs between two runs.

:func:`collect` describes a finished :class:`~benchmark.session.BenchSession`
as a JSON-ready dict (the ``provenance`` of a results file): the project and
its git commit, Python, the versions of the packages that touch the answers,
the accelerator, each model used (id, quantization, revision, settings), the
sha256 of each prompt file used, the config, the dataset checksums, the frozen
samples, the record mode, and per case the live and replayed answer counts and
the model ids the API served.

:func:`differences` lists, in words, what differs between two such dicts that
matters when comparing the runs' numbers (prompts, model ids, served
snapshots, revisions, quantization, data); softer differences (package
versions, commit, accelerator, config bytes) come after them, each line
starting with ``note:``.

Nothing here imports torch: versions come from package metadata, and the GPU
name from torch only when torch is already imported (else ``nvidia-smi``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.datasets import file_digest
from benchmark.extraction import EXTRACT_PROMPT

if TYPE_CHECKING:
    from benchmark.session import BenchSession

PROVENANCE_SCHEMA = "astrobench-provenance/1"
PROJECT = "astro-vlm-bench"
NOT_INSTALLED = "not installed"
# Distributions whose versions are recorded; those in NOTED_PACKAGES can change answers.
PACKAGES = ("torch", "transformers", "bitsandbytes", "accelerate", "openai", "vcrpy", "numpy", "pillow")
NOTED_PACKAGES = ("torch", "transformers", "bitsandbytes", "accelerate", "openai")
GIT_TIMEOUT_S = 5.0
NVIDIA_SMI_TIMEOUT_S = 5.0
# Model settings that never change an answer (how a model is reached or paid for): left out.
_OPERATIONAL = frozenset({"api_key_env", "concurrency", "min_concurrency", "max_retries", "rate_limit_retries",
                          "timeout_s", "prices", "device_map", "batch", "batch_poll_s", "batch_retry"})
_CONFIG_BASIS = ("sha256 of the newline-joined sha256 (hex) of each config source file's bytes, "
                 "in merge order (the merged raw config is not kept after loading)")


# -- collecting -------------------------------------------------------------------------------
def collect(bench: BenchSession, *, plugin_config: Any = None) -> dict[str, Any]:
    """What produced ``bench``'s results (see the module docstring); JSON-ready.

    Models, prompts and datasets are those of the cases in ``bench.results``
    (a derived case counts as its base task's), plus the extractor model and
    its instruction file of a model with ``extract_with``. ``plugin_config``
    (a ``pytest.Config``) adds how the run was started.
    """
    config = bench.config
    results = list(bench.results)
    out: dict[str, Any] = {
        "schema": PROVENANCE_SCHEMA,
        "project": project(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "packages": package_versions(),
        "accelerator": accelerator(),
        "config": config_digest(config.sources),
        "record_mode": bench.record_mode,
        "limit": bench.limit,
    }

    model_names: list[str] = []
    prompts: list[tuple[str, str]] = []  # (base task, variant)
    for r in results:
        task = config.tasks.get(r.task)
        model = config.models.get(r.model)
        if task is None or model is None:  # a result whose task or model this config does not have
            continue
        base = config.base_task(task)
        _add(model_names, model.name)
        _add(prompts, (base.name, r.prompt))
        extractor = model.settings.get("extract_with") if model.provider == "transformers" else None
        if extractor:
            _add(model_names, str(extractor))
            _add(prompts, (base.name, str(model.settings.get("extract_prompt", EXTRACT_PROMPT))))
    out["models"] = {name: model_info(config.models[name]) for name in model_names if name in config.models}
    for name, provider in (getattr(bench, "_providers", None) or {}).items():
        loaded = getattr(provider, "loaded_revision", None)  # in-process weights: the commit loaded
        if name in out["models"] and isinstance(loaded, str):
            out["models"][name]["loaded_revision"] = loaded
    out["prompts"] = {f"{t}/{v}": prompt_info(config.tasks[t], v) for t, v in prompts}

    datasets: list[str] = []
    for t, _ in prompts:
        dataset = config.tasks[t].dataset
        if dataset is not None:
            _add(datasets, dataset)
    out["datasets"] = {name: dataset_info(name, config.datasets.get(name, {}), Path(bench.frozen_dir))
                       for name in datasets}
    out["cases"] = {r.case_id: case_info(r) for r in results}
    for r in results:  # the sampling rule behind each case's sample_sha256
        task = config.tasks.get(r.task)
        if task is not None:
            out["cases"][r.case_id]["sample"] = config.base_task(task).selection.to_json()
    if plugin_config is not None:
        out["invocation"] = invocation(plugin_config, scrub=getattr(bench, "scrub", None))
    return out


def _add(items: list[Any], item: Any) -> None:
    if item not in items:
        items.append(item)



def project() -> dict[str, Any]:
    """The project's version and, when the package runs from a git checkout, its commit."""
    info: dict[str, Any] = {"name": PROJECT, "version": _version(PROJECT)}
    git = git_state(Path(__file__).resolve().parent.parent)
    if git is not None:
        info["git"] = git
    return info


def git_state(root: Path, *, timeout: float = GIT_TIMEOUT_S) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` when ``root`` is the top of a git work tree, else None.

    ``dirty``: tracked files differ from the commit (untracked files are not counted).
    An installed package inside some other repository (e.g. a venv in a checkout)
    is not that repository's code, so its top level must be ``root`` itself.
    """
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top:
        return None
    try:
        if Path(top).resolve() != root.resolve():
            return None
    except OSError:
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions from package metadata (nothing is imported); ``"not installed"`` when absent."""
    return {name: _version(name) for name in names}


def accelerator(*, timeout: float = NVIDIA_SMI_TIMEOUT_S) -> dict[str, str]:
    """``{"name", "via"}``: the GPU(s) by torch (only when torch is already imported and sees
    CUDA), else by ``nvidia-smi``, else the CPU (``platform.processor()`` or the machine type)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                if names:
                    return {"name": ", ".join(names), "via": "torch"}
        except Exception:  # noqa: BLE001, S110  (a broken CUDA setup: fall back to nvidia-smi)
            pass
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=timeout, check=False)
        names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if done.returncode == 0 and names:
            return {"name": ", ".join(names), "via": "nvidia-smi"}
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.processor() or platform.machine() or "unknown"
    return {"name": f"CPU {cpu}", "via": "platform"}


def config_digest(sources: Iterable[Path]) -> dict[str, Any]:
    """Each config source file (path, sha256 of its bytes) and one sha256 over them, in order
    (:data:`_CONFIG_BASIS`). A config built in code (no sources) has ``sha256`` None."""
    files = []
    for src in sources:
        try:
            files.append({"path": str(src), "sha256": file_digest(Path(src), "sha256")})
        except OSError as exc:
            files.append({"path": str(src), "sha256": None, "error": str(exc)})
    digests = [f["sha256"] or "" for f in files]
    return {"sources": files, "sha256": hashlib.sha256("\n".join(digests).encode()).hexdigest() if files else None,
            "basis": _CONFIG_BASIS}


def model_info(model: Any) -> dict[str, Any]:
    """Model id, quantization and revision (None where they do not apply or are not set),
    and the settings that can change an answer (not keys, prices, concurrency, timeouts)."""
    s = model.settings
    if model.provider == "transformers":
        quantization = s.get("quantization", "none")
    else:
        quantization = s.get("quantization")  # an API model: not ours to know
    settings = {k: v for k, v in sorted(s.items()) if k not in _OPERATIONAL}
    if "base_url" in settings:
        from benchmark.config import redact_url

        url = settings["base_url"]  # one URL, or a list of replicas
        settings["base_url"] = [redact_url(str(u)) for u in url] if isinstance(url, list) else redact_url(str(url))
    return {"provider": model.provider, "model": model.model, "quantization": quantization,
            "revision": s.get("revision"), "settings": _jsonable(settings)}


def prompt_info(task: Any, variant: str) -> dict[str, Any]:
    """The prompt file: its path, the sha256 of its bytes, and the sha256 of the text sent
    (``TaskConfig.prompt_text``, as a case's ``prompt_sha256``)."""
    try:
        path = task.prompt_path(variant)
        data = Path(path).read_bytes()
        text = task.prompt_text(variant)
    # gone since the run (a BenchError or an OSError): say so, never fail the report
    except Exception as exc:  # noqa: BLE001
        return {"path": None, "sha256": None, "text_sha256": None, "error": str(exc)}
    return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
            "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "variant": task.variant(variant).settings()}


def dataset_info(name: str, spec: Mapping[str, Any], frozen_dir: Path) -> dict[str, Any]:
    """The dataset's format, its files' checksums from the config, and the frozen sample's file sha256."""
    files = {fname: (entry.get("checksum") if isinstance(entry, Mapping) else None)
             for fname, entry in sorted((spec.get("files") or {}).items())}
    info: dict[str, Any] = {"format": spec.get("format"), "files": files}
    if spec.get("format") == "folder":
        info["path"] = spec.get("path")
    frozen = frozen_dir / f"{name}.npz"
    try:
        info["frozen"] = {"path": str(frozen), "sha256": file_digest(frozen, "sha256")} if frozen.is_file() else None
    except OSError as exc:
        info["frozen"] = {"path": str(frozen), "sha256": None, "error": str(exc)}
    return info


def case_info(result: Any) -> dict[str, Any]:
    """One case: model id, prompt and sample digests, how answers became classes, the served
    model ids and, for a case that asked the model, its live and replayed answers."""
    served = [m.strip() for m in (result.served_model or "").split(",") if m.strip()]
    info: dict[str, Any] = {"task": result.task, "model": result.model, "model_id": result.model_id,
                            "prompt": result.prompt, "prompt_sha256": result.prompt_sha256,
                            "sample_sha256": result.sample_sha256, "method": result.method,
                            "served_model": served}
    if getattr(result, "shots", None):  # few-shot: the examples sent (k, seed, ids and classes)
        info["shots"] = result.shots
    if result.derived_from is None:  # a derived case re-scores its base case's answers
        n = int(result.scores.n)
        info["answers"] = {"total": n, "replayed": int(result.cached), "live": max(0, n - int(result.cached))}
    else:
        info["derived_from"] = result.derived_from
    return info


def invocation(config: Any, *, scrub: Any = None) -> dict[str, Any]:
    """How pytest was started: its arguments, the rootdir and the xdist worker count."""
    clean = scrub if callable(scrub) else (lambda s: s)
    params = getattr(config, "invocation_params", None)
    args = [clean(str(a)) for a in (getattr(params, "args", ()) or ())]
    opt = getattr(config, "option", None)
    return {"args": args, "rootdir": str(getattr(config, "rootpath", "")),
            "workers": getattr(opt, "numprocesses", None) if opt is not None else None}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# -- merging (astrobench report) ------------------------------------------------------------------
_SECTIONS = ("models", "prompts", "datasets")


def _without_paths(value: Any) -> Any:
    """``value`` less every ``path`` key: the same file read from two checkouts is one file."""
    if isinstance(value, Mapping):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


def merge_provenance(parts: Sequence[tuple[str, Any, Sequence[str]]]) -> dict[str, Any] | None:
    """One provenance for a merged leaderboard from ``(file, its provenance, the case ids kept from
    it)``: each kept case's entry from its own file; the models, prompts and datasets of every file,
    except an entry two files disagree on (paths aside), which is left out and named in
    ``disagree`` so that no comparison takes one run's word for another's; each file's run-level
    facts under ``runs``. None when a file records no provenance (its cases cannot be vouched for)."""
    if not parts or any(not isinstance(prov, Mapping) for _, prov, _ in parts):
        return None
    out: dict[str, Any] = {"schema": PROVENANCE_SCHEMA, "merged": True, "runs": {},
                           **{section: {} for section in _SECTIONS}, "cases": {}, "disagree": []}
    for label, prov, case_ids in parts:
        out["runs"][label] = {k: v for k, v in prov.items() if k not in (*_SECTIONS, "cases", "schema")}
        for section in _SECTIONS:
            for name, entry in (prov.get(section) or {}).items():
                key = f"{section}.{name}"
                if key in out["disagree"]:
                    continue
                have = out[section].get(name)
                if have is None:
                    out[section][name] = entry
                elif _without_paths(have) != _without_paths(entry):
                    del out[section][name]
                    out["disagree"].append(key)
        cases = prov.get("cases") or {}
        out["cases"].update({cid: cases[cid] for cid in case_ids if cid in cases})
    return out


# -- comparing --------------------------------------------------------------------------------
def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _rule(sample: Any) -> str:
    """A case's sampling rule in words (``first 500``, ``stratified all (seed 7)``)."""
    from benchmark.sampling import Selection

    try:
        return Selection.from_json(sample).describe()
    except (ValueError, TypeError):
        return str(sample)


def _change(what: str, old: Any, new: Any) -> str:
    return f"{what}: {_short(old)} -> {_short(new)}"


def _both(old: Mapping[str, Any], new: Mapping[str, Any], key: str) -> list[tuple[str, Any, Any]]:
    """Entries of table ``key`` present in both runs (a thing only one run used is no difference)."""
    a, b = old.get(key) or {}, new.get(key) or {}
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return []
    return [(name, a[name], b[name]) for name in a if name in b
            and isinstance(a[name], Mapping) and isinstance(b[name], Mapping)]


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`collect` dicts (``old``: e.g. the baseline's) that
    matters for comparing their numbers, one line each, in words; then softer differences,
    each line starting with ``note:``. Only things both runs used are compared; timestamps,
    paths and unrelated package versions are ignored. Empty: nothing relevant differs."""
    hard: list[str] = []
    soft: list[str] = []
    renamed: set[str] = set()  # models whose id changed: said once, not again per case
    for side, other in ((old, new), (new, old)):  # a merged run whose files disagree cannot vouch for it
        for key in side.get("disagree") or []:
            section, _, name = str(key).partition(".")
            if name in (other.get(section) or {}):
                what = {"models": "model", "prompts": "prompt", "datasets": "dataset"}.get(section, section)
                hard.append(f"{what} {name}: the merged runs disagree on it (settings, id or weights), so it is "
                            "not compared")

    for name, a, b in _both(old, new, "models"):
        if a.get("model") != b.get("model"):
            renamed.add(name)
        for key, label in (("model", "model id"), ("quantization", "quantization"), ("revision", "revision")):
            if a.get(key) != b.get(key):
                hard.append(_change(f"model {name}: {label}", a.get(key), b.get(key)))
        if a.get("loaded_revision") and b.get("loaded_revision") and a["loaded_revision"] != b["loaded_revision"]:
            hard.append(_change(f"model {name}: weights loaded (commit)", a["loaded_revision"], b["loaded_revision"]))
        sa, sb = a.get("settings") or {}, b.get("settings") or {}
        for key in sorted(set(sa) | set(sb)):
            if key in ("quantization", "revision"):
                continue
            if sa.get(key) != sb.get(key):
                hard.append(_change(f"model {name}: setting {key}", sa.get(key), sb.get(key)))

    for name, a, b in _both(old, new, "prompts"):
        if a.get("text_sha256") != b.get("text_sha256"):
            hard.append(_change(f"prompt {name}: sha256 of the text sent", a.get("text_sha256"),
                                b.get("text_sha256")))
        elif a.get("sha256") != b.get("sha256"):
            soft.append(_change(f"note: prompt file {name}: sha256 of the file (same text sent)",
                                a.get("sha256"), b.get("sha256")))
        va, vb = a.get("variant") or {}, b.get("variant") or {}
        for key in sorted((set(va) | set(vb)) - {"file"}):  # the file is judged by its text above
            if va.get(key) != vb.get(key):
                hard.append(_change(f"prompt {name}: {key}", va.get(key), vb.get(key)))

    for name, a, b in _both(old, new, "datasets"):
        fa, fb = a.get("files") or {}, b.get("files") or {}
        for fname in sorted(set(fa) | set(fb)):
            if fa.get(fname) != fb.get(fname):
                hard.append(_change(f"dataset {name}: checksum of {fname}", fa.get(fname), fb.get(fname)))
        za, zb = (a.get("frozen") or {}).get("sha256"), (b.get("frozen") or {}).get("sha256")
        if za != zb:
            hard.append(_change(f"dataset {name}: frozen sample sha256", za, zb))

    for case, a, b in _both(old, new, "cases"):
        for key, label in (("model_id", "model id"), ("served_model", "served model"), ("method", "method"),
                           ("sample_sha256", "sample sha256")):
            if a.get(key) != b.get(key) and not (key == "model_id" and b.get("model") in renamed):
                hard.append(_change(f"case {case}: {label}", a.get(key), b.get(key)))
        ea, eb = ([e.get("id") for e in (x.get("shots") or {}).get("examples") or []] for x in (a, b))
        if ea != eb:
            hard.append(_change(f"case {case}: few-shot examples", ea, eb))
        if a.get("sample") and b.get("sample") and a["sample"] != b["sample"]:  # older runs have none
            hard.append(_change(f"case {case}: sample", _rule(a["sample"]), _rule(b["sample"])))

    if old.get("limit") != new.get("limit"):
        hard.append(_change("--bench-limit", old.get("limit"), new.get("limit")))

    pa, pb = old.get("packages") or {}, new.get("packages") or {}
    for name in NOTED_PACKAGES:
        if name in pa and name in pb and pa[name] != pb[name]:
            soft.append(_change(f"note: {name} version", pa[name], pb[name]))
    ga, gb = (old.get("project") or {}).get("git"), (new.get("project") or {}).get("git")
    if ga and gb and (ga.get("commit"), ga.get("dirty")) != (gb.get("commit"), gb.get("dirty")):
        soft.append(f"note: code: commit {_commit(ga)} -> {_commit(gb)}")
    va, vb = (old.get("project") or {}).get("version"), (new.get("project") or {}).get("version")
    if va and vb and va != vb:
        soft.append(_change("note: astro-vlm-bench version", va, vb))
    aa, ab = (old.get("accelerator") or {}).get("name"), (new.get("accelerator") or {}).get("name")
    if aa and ab and aa != ab:
        soft.append(_change("note: accelerator", aa, ab))
    ca, cb = (old.get("config") or {}).get("sha256"), (new.get("config") or {}).get("sha256")
    if ca and cb and ca != cb:
        soft.append(_change("note: config files' sha256", ca, cb))
    if old.get("record_mode") != new.get("record_mode"):
        soft.append(_change("note: record mode", *(_mode(x.get("record_mode")) for x in (old, new))))
    return hard + soft


def _mode(mode: Any) -> str:
    return "disabled (every answer live)" if mode is None else str(mode)


def _commit(git: Mapping[str, Any]) -> str:
    return f"{str(git.get('commit'))[:12]}{' (dirty)' if git.get('dirty') else ''}"


__all__ = ["PROVENANCE_SCHEMA", "accelerator", "collect", "differences", "git_state", "package_versions"]
