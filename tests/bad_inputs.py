"""A corpus of bad and damaged inputs, each with the exact outcome prefdata owes its user.

Every case is a small input written from code (no binary fixtures), the command a user
runs on it (``prefdata convert``, ``prefdata validate`` or ``recipes/binarize.py``), and
what must come out: either a one-line error and exit status 2 (a user's mistake), or
success with the rows it cannot use in the rejects, each with its stage, input row, field
and reason, the good rows kept, and every count adding up.

``tests/test_bad_inputs.py`` runs each case as a test; ``python tests/bad_inputs.py``
runs them all and prints the table of case, outcome and verdict::

    .venv/bin/python tests/bad_inputs.py
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
Q = [{"role": "user", "content": "Q"}]


@dataclass
class Case:
    """One bad input: ``make(folder) -> argv`` writes the input and gives the command
    (``convert``/``validate`` for ``prefdata``, ``binarize`` for the recipe);
    ``error``: the text the one error line must hold (exit status 2); else ``rejects``:
    the expected ``(stage, row, field, reason start)`` of every reject, and ``pools``
    the pools (or, for binarize, pairs) written."""

    name: str
    what: str
    make: Callable[[Path], list[str]]
    error: str | None = None
    rejects: list[tuple[str, int, str | None, str]] = field(default_factory=list)
    pools: int | None = None
    env: dict[str, str] = field(default_factory=dict)


def jsonl(folder: Path, lines: list, name: str = "in.jsonl") -> Path:
    """A JSON Lines file: dicts are dumped, str and bytes written as they are."""
    path = folder / name
    data = b"".join(
        (x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode())
        + b"\n"
        for x in lines
    )
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


def parquet(folder: Path, table: pa.Table, name: str = "in.parquet") -> Path:
    path = folder / name
    pq.write_table(table, path)
    return path


def long(folder: Path, rows: list, *flags: str) -> list[str]:
    path = jsonl(folder, rows)
    return ["convert", str(path), "--layout", "long", *flags, "--out", str(folder / "o.parquet")]


def pairs(folder: Path, rows: list, *flags: str, layout: str = "pairs") -> list[str]:
    path = jsonl(folder, rows)
    return ["convert", str(path), "--layout", layout, *flags, "--out", str(folder / "o.parquet")]


def convert(folder: Path, name: str, data: str | bytes) -> list[str]:
    """Write ``data`` to ``folder/name``; the command converting it in the long layout."""
    path = folder / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return ["convert", str(path), "--layout", "long", "--out", str(folder / "o.parquet")]


def ok(i: int, **kw) -> dict:
    return {"prompt": f"question {i}", "response": f"answer {i}", "rm": float(i), **kw}


def hh(*turns: str) -> str:
    return "".join(f"\n\n{t}" for t in turns)


def _truncated_gz(folder: Path) -> list[str]:
    data = gzip.compress(b"".join(json.dumps(ok(i)).encode() + b"\n" for i in range(400)))
    path = folder / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    return ["convert", str(path), "--layout", "long", "--out", str(folder / "o.parquet")]


def _corrupt_parquet(folder: Path) -> list[str]:
    path = parquet(folder, pa.table({"prompt": ["Q"] * 50, "response": ["A"] * 50}))
    data = bytearray(path.read_bytes())
    data[4:40] = b"\x00" * 36
    path.write_bytes(bytes(data))
    return ["convert", str(path), "--layout", "long", "--out", str(folder / "o.parquet")]


def _truncated_parquet(folder: Path) -> list[str]:
    path = parquet(folder, pa.table({"prompt": ["Q"] * 50, "response": ["A"] * 50}))
    path.write_bytes(path.read_bytes()[:-30])
    return ["convert", str(path), "--layout", "long", "--out", str(folder / "o.parquet")]


def _dup_column(folder: Path) -> list[str]:
    names = ["prompt", "response", "response"]
    table = pa.Table.from_arrays([pa.array(["Q"]), pa.array(["A"]), pa.array(["B"])], names=names)
    path = parquet(folder, table)
    return ["convert", str(path), "--layout", "long", "--out", str(folder / "o.parquet")]


def _pool_table(folder: Path, candidates: list) -> list[str]:
    from prefdata.schema import pool_schema

    rows = [{"prompt_id": f"p{i}", "prompt": Q, "candidates": c} for i, c in enumerate(candidates)]
    path = parquet(folder, pa.Table.from_pylist(rows, schema=pool_schema(["rm"])))
    return ["validate", str(path)]


def _score_table(folder: Path, values: list) -> list[str]:
    n = len(values)
    table = pa.table(
        {
            "prompt": [f"q{i // 2}" for i in range(n)],
            "response": [f"r{i}" for i in range(n)],
            "rm": pa.array(values, pa.float64()),
        }
    )
    path = parquet(folder, table)
    return ["convert", str(path), "--layout", "long", "--score-col", "rm", "--out",
            str(folder / "o.parquet")]  # fmt: skip


def _binarize(folder: Path, rows: list, *flags: str) -> list[str]:
    return ["binarize", "--input", str(jsonl(folder, rows)), *flags, "--out", str(folder / "out")]


def rated(n: int = 9) -> list[dict]:
    """Three prompts, each with responses of distinct scores."""
    return [{"prompt": f"question {i % 3}", "response": f"r{i}", "rm": float(i)} for i in range(n)]


def _out_is_a_file(folder: Path) -> list[str]:
    (folder / "taken").write_text("x")
    rows = rated()
    argv = _binarize(folder, rows, "--score-col", "rm")
    return [*argv[:-1], str(folder / "taken")]


def _empty_dir(folder: Path) -> list[str]:
    (folder / "data").mkdir()
    (folder / "data" / "notes.txt").write_text("nothing here")
    return ["convert", str(folder / "data"), "--layout", "long", "--out", str(folder / "o.parquet")]


def _unknown_ext(folder: Path) -> list[str]:
    (folder / "in.txt").write_text("prompt,response\n")
    return ["convert", str(folder / "in.txt"), "--out", str(folder / "o.parquet")]


def _damaged_workdir(folder: Path) -> list[str]:
    rows = rated()
    argv = _binarize(folder, rows, "--score-col", "rm", "--format", "trl-dpo")
    manifest = folder / "out" / "work" / "pools" / "ingest" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{not json")
    return argv


UF = {
    "instruction": "Q",
    "completions": [
        {"response": "a", "model": "m1", "overall_score": 7.0},
        {"response": "b", "model": "m2", "overall_score": 3.0},
    ],
}


CASES: list[Case] = [
    # ----------------------------------------------------------------- readers: JSON
    Case(
        "jsonl-invalid-json",
        "a line cut mid-object",
        lambda d: long(d, [ok(0), '{"prompt": "Q", "response":', ok(1)]),
        rejects=[("read", 1, None, "line 2: invalid JSON")],
        pools=2,
    ),
    Case(
        "jsonl-not-an-object",
        "a line holding an array",
        lambda d: long(d, [ok(0), "[1, 2]"]),
        rejects=[("read", 1, None, "line 2: JSON array, not an object")],
        pools=1,
    ),
    Case(
        "jsonl-invalid-utf8",
        "a Latin-1 byte in a line",
        lambda d: long(d, [b'{"prompt": "caf\xe9", "response": "x"}', ok(1)]),
        rejects=[("read", 0, None, "line 1: invalid UTF-8 at byte")],
        pools=1,
    ),
    Case(
        "jsonl-invalid-utf8-key",
        "a Latin-1 byte in a nested key",
        lambda d: long(d, [ok(0), b'{"prompt": "Q", "response": "x", "meta": {"caf\xe9": 1}}']),
        rejects=[("read", 1, None, "line 2: invalid UTF-8 at byte")],
        pools=1,
    ),
    Case(
        "jsonl-lone-surrogate",
        "an unpaired \\ud800 escape",
        lambda d: long(d, [ok(0), '{"prompt": "a\\ud800", "response": "x"}']),
        rejects=[("read", 1, "prompt", "line 2: field 'prompt' holds a lone UTF-16 surrogate")],
        pools=1,
    ),
    Case(
        "jsonl-bom-crlf",
        "a BOM and CRLF line ends",
        lambda d: long(
            d, [b"\xef\xbb\xbf" + json.dumps(ok(0)).encode() + b"\r", json.dumps(ok(1)) + "\r"]
        ),
        pools=2,
    ),
    Case(
        "jsonl-blank-lines",
        "blank lines keep their numbers",
        lambda d: long(d, ["", ok(0), "   ", {"prompt": "", "response": "x"}]),
        rejects=[("layout:long", 3, "prompt", "empty prompt")],
        pools=1,
    ),
    Case(
        "jsonl-mixed-kinds",
        "a number where other rows hold strings",
        lambda d: long(d, [ok(0), ok(1), {"prompt": "q", "response": 7}]),
        rejects=[
            (
                "read",
                2,
                "response",
                "line 3: field 'response' is a number where other rows hold a string",
            )
        ],
        pools=2,
    ),
    Case(
        "jsonl-empty-object",
        "an empty object among rows",
        lambda d: long(d, [ok(0), {}]),
        rejects=[("layout:long", 1, "prompt", "missing prompt (null)")],
        pools=1,
    ),
    Case("jsonl-empty-file", "a file with no rows", lambda d: long(d, []), pools=0),
    Case("jsonl-only-blank", "only blank lines", lambda d: long(d, ["", "  ", ""]), pools=0),
    Case(
        "jsonl-gz-truncated",
        "a .jsonl.gz cut in half: the lines before the break are kept",
        _truncated_gz,
        rejects=[("read", -1, None, "breaks off here")],
        pools=-1,
    ),
    Case(
        "json-array-items",
        "a JSON array with non-object items",
        lambda d: convert(d, "in.json", json.dumps([ok(0), 7, ok(1), "text"])),
        rejects=[
            ("read", 1, None, "item 1: JSON number, not an object"),
            ("read", 3, None, "item 3: JSON string, not an object"),
        ],
        pools=2,
    ),
    Case(
        "json-array-invalid-utf8",
        "a Latin-1 byte in a JSON array (the whole text is one JSON value)",
        lambda d: convert(d, "in.json", b'[{"prompt": "caf\xe9", "response": "a"}]'),
        error="in.json: not valid UTF-8 at line 1 column 17 (byte 16)",
    ),
    Case(
        "json-array-syntax",
        "a JSON array with a missing comma between two fields",
        lambda d: convert(d, "in.json", '[{"prompt": "q",\n  "response": "a" "rm": 1}]'),
        error="in.json: not valid JSON: Expecting ',' delimiter at line 2 column 19 (byte 35)",
    ),
    Case(
        "json-array-bom",
        "a JSON array after a UTF-8 byte-order mark (as Windows tools write it)",
        lambda d: convert(d, "in.json", b"\xef\xbb\xbf" + json.dumps([ok(0), ok(1)]).encode()),
        pools=2,
    ),
    Case(
        "json-scalar",
        "a .json file holding one string (read as JSON Lines)",
        lambda d: convert(d, "in.json", '"just a string"'),
        rejects=[("read", 0, None, "line 1: JSON string, not an object")],
        pools=0,
    ),
    # ----------------------------------------------------------------- readers: files
    Case(
        "parquet-corrupt-page",
        "zeros over the first data page",
        _corrupt_parquet,
        error="in.parquet: ",
    ),
    Case(
        "parquet-truncated",
        "the footer cut off",
        _truncated_parquet,
        error="in.parquet: Parquet magic bytes not found",
    ),
    Case(
        "parquet-duplicate-column",
        "two columns named response",
        _dup_column,
        error="'response' appears 2 times",
    ),
    Case(
        "csv-ragged-rows",
        "rows with too many or too few fields, an empty prompt",
        lambda d: convert(d, "in.csv", "prompt,response\nQ1,A1\nQ2,A2,extra\nQ3\n,A4\nQ5,A5\n"),
        rejects=[
            ("read", 1, None, "line 3: 3 fields where the header has 2"),
            ("read", 2, None, "line 4: 1 fields where the header has 2"),
            ("layout:long", 3, "prompt", "empty prompt"),
        ],
        pools=2,
    ),
    Case(
        "csv-latin1-value",
        "a Latin-1 byte in one value (an Excel export): that row only",
        lambda d: convert(d, "in.csv", b"prompt,response\nQ1,A1\nQ2,caf\xe9\nQ3,A3\n"),
        rejects=[("read", 1, "response", "field 'response' is not valid UTF-8 at byte 3")],
        pools=2,
    ),
    Case(
        "csv-ragged-latin1-row",
        "a row with a field too many and a Latin-1 byte (pyarrow cannot decode it)",
        lambda d: convert(d, "in.csv", b"prompt,response\nQ1,A1\nQ2,caf\xe9,extra\nQ3,A3\n"),
        rejects=[("read", 1, None, "line 3: 3 fields where the header has 2")],
        pools=2,
    ),
    Case(
        "csv-header-invalid-utf8",
        "a Latin-1 byte in the header",
        lambda d: convert(d, "in.csv", b"prompt,response,caf\xe9\nQ1,A1,1\n"),
        error="in.csv: a column name is not valid UTF-8: b'caf\\xe9'",
    ),
    Case(
        "missing-file",
        "a path that does not exist",
        lambda d: ["convert", str(d / "nope.jsonl"), "--out", str(d / "o.parquet")],
        error="no such file or folder",
    ),
    Case(
        "folder-without-data",
        "a folder holding only a .txt file",
        _empty_dir,
        error="no prompt column",
    ),
    Case("unknown-extension", "a .txt file", _unknown_ext, error="unknown file type"),
    Case(
        "hub-name-offline",
        "a Hub dataset name with no network",
        lambda d: ["convert", "someone/no-such-dataset", "--out", str(d / "o.parquet")],
        error="",
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    ),
    # ----------------------------------------------------------------- layout: long
    Case(
        "long-misspelt-column",
        "--prompt-col names no column",
        lambda d: long(d, [ok(0)], "--prompt-col", "promt"),
        error="prompt column 'promt' not found",
    ),
    Case(
        "long-null-prompt",
        "a null prompt",
        lambda d: long(d, [ok(0), {"prompt": None, "response": "x"}]),
        rejects=[("layout:long", 1, "prompt", "missing prompt (null)")],
        pools=1,
    ),
    Case(
        "long-null-response",
        "a null response",
        lambda d: long(d, [ok(0), {"prompt": "q", "response": None}]),
        rejects=[("layout:long", 1, "response", "response is not a string (null)")],
        pools=1,
    ),
    Case(
        "long-score-nan-inf",
        "NaN and infinite scores (null is kept)",
        lambda d: _score_table(d, [1.0, float("nan"), float("inf"), None]),
        rejects=[
            ("layout:long", 1, "rm", "score rm is nan"),
            ("layout:long", 2, "rm", "score rm is inf"),
        ],
        pools=2,
    ),
    Case(
        "long-score-not-number",
        "a score column of text",
        lambda d: long(d, [ok(0, rm="high"), ok(1, rm="low")], "--score-col", "rm"),
        rejects=[
            ("layout:long", 0, "rm", "score rm is not a number"),
            ("layout:long", 1, "rm", "score rm is not a number"),
        ],
        pools=0,
    ),
    Case(
        "long-bad-role",
        "a message with an unknown role",
        lambda d: long(
            d,
            [
                {"prompt": [{"role": "wizard", "content": "Q"}], "response": "x"},
                {"prompt": Q, "response": "y"},
            ],
        ),
        rejects=[("layout:long", 0, "prompt[0].role", "'wizard' is not one of")],
        pools=1,
    ),
    Case(
        "long-prompt-ends-with-assistant",
        "a conversation that ends with the assistant",
        lambda d: long(
            d,
            [
                {"prompt": [*Q, {"role": "assistant", "content": "A"}], "response": "x"},
                {"prompt": Q, "response": "y"},
            ],
        ),
        rejects=[("layout:long", 0, "prompt", "ends with an assistant turn")],
        pools=1,
    ),
    Case(
        "long-id-collision",
        "one prompt id given to two prompts",
        lambda d: long(d, [ok(0, id="x"), ok(1, id="x"), ok(2, id="y")], "--id-col", "id"),
        rejects=[("layout:long", 1, "id", "prompt_id 'x' is already used by row 0")],
        pools=2,
    ),
    Case(
        "long-missing-id",
        "an empty given prompt id",
        lambda d: long(d, [ok(0, id="x"), ok(1, id="")], "--id-col", "id"),
        rejects=[("layout:long", 1, "id", "missing prompt id")],
        pools=1,
    ),
    Case(
        "long-huge-text",
        "a 2 MB response",
        lambda d: long(d, [ok(0, response="x" * (2 << 20)), ok(1)]),
        pools=2,
    ),
    # ----------------------------------------------------------------- layout: pairs and hh
    Case(
        "pairs-identical-sides",
        "chosen and rejected the same text",
        lambda d: pairs(
            d,
            [
                {"prompt": "q", "chosen": "a", "rejected": "a"},
                {"prompt": "r", "chosen": "a", "rejected": "b"},
            ],
        ),
        rejects=[("layout:pairs", 0, "rejected", "chosen and rejected are the same text")],
        pools=1,
    ),
    Case(
        "pairs-contradictory",
        "A over B and B over A for one prompt",
        lambda d: pairs(
            d,
            [
                {"prompt": "q", "chosen": "a", "rejected": "b"},
                {"prompt": "q", "chosen": "c", "rejected": "d"},
                {"prompt": "q", "chosen": "b", "rejected": "a"},
            ],
        ),
        rejects=[
            ("layout:pairs", 0, "chosen", "contradicts row 2"),
            ("layout:pairs", 2, "chosen", "contradicts row 0"),
        ],
        pools=1,
    ),
    Case(
        "pairs-missing-column",
        "no rejected column",
        lambda d: pairs(d, [{"prompt": "q", "chosen": "a", "better": "b"}]),
        error="rejected column 'rejected' not found",
    ),
    Case(
        "pairs-null-chosen",
        "a null chosen response",
        lambda d: pairs(
            d,
            [
                {"prompt": "q", "chosen": None, "rejected": "b"},
                {"prompt": "r", "chosen": "a", "rejected": "b"},
            ],
        ),
        rejects=[("layout:pairs", 0, "chosen", "")],
        pools=1,
    ),
    Case(
        "pairs-bad-margin",
        'a margin written as text ("NaN")',
        lambda d: pairs(
            d,
            [
                {"prompt": "q", "chosen": "a", "rejected": "b", "m": 1.0},
                {"prompt": "r", "chosen": "a", "rejected": "b", "m": "NaN"},
            ],
            "--margin-col",
            "m",
        ),
        rejects=[("read", 1, "m", "line 2: field 'm' is a string where other rows hold a number")],
        pools=1,
    ),
    Case(
        "hh-text-before-turn",
        "a transcript with text before the first turn",
        lambda d: pairs(
            d,
            [
                {
                    "chosen": "Hello" + hh("Human: q", "Assistant: a"),
                    "rejected": hh("Human: q", "Assistant: b"),
                },
                {
                    "chosen": hh("Human: r", "Assistant: a"),
                    "rejected": hh("Human: r", "Assistant: b"),
                },
            ],
            layout="hh",
        ),
        rejects=[("layout:hh", 0, "chosen", "chosen: text before the first turn")],
        pools=1,
    ),
    Case(
        "hh-differing-context",
        "chosen and rejected disagree before the last turn",
        lambda d: pairs(
            d,
            [
                {
                    "chosen": hh("Human: q", "Assistant: a"),
                    "rejected": hh("Human: other", "Assistant: b"),
                }
            ],
            layout="hh",
        ),
        rejects=[
            ("layout:hh", 0, "chosen", "chosen and rejected differ before the final assistant turn")
        ],
        pools=0,
    ),
    Case(
        "hh-repeated-assistant",
        "two assistant turns in a row: joined, kept",
        lambda d: pairs(
            d,
            [
                {
                    "chosen": hh("Human: q", "Assistant: a", "Assistant: more"),
                    "rejected": hh("Human: q", "Assistant: b"),
                }
            ],
            layout="hh",
        ),
        pools=1,
    ),
    # ----------------------------------------------------------------- ultrafeedback and pools
    Case(
        "ultrafeedback-null-completions",
        "a row whose completions are null",
        lambda d: pairs(d, [UF, {"instruction": "R", "completions": None}], layout="ultrafeedback"),
        rejects=[("layout:ultrafeedback", 1, "completions", "missing (null)")],
        pools=1,
    ),
    Case(
        "ultrafeedback-no-response-field",
        "completions without a response field",
        lambda d: pairs(
            d, [{"instruction": "Q", "completions": [{"text": "a"}]}], layout="ultrafeedback"
        ),
        error="completions have no 'response' field",
    ),
    Case(
        "pool-duplicate-candidate-ids",
        "a pool listing one candidate id twice",
        lambda d: _pool_table(
            d,
            [
                [
                    {"candidate_id": "c", "response": "a", "scores": {"rm": 1.0}, "flags": []},
                    {"candidate_id": "c", "response": "b", "scores": {"rm": 0.0}, "flags": []},
                ]
            ],
        ),
        error="@validate:row 0, field candidates[1].candidate_id",
    ),
    # ----------------------------------------------------------------- the recipe
    Case(
        "binarize-misspelt-score",
        "--score-col names no column",
        lambda d: _binarize(d, [ok(0)], "--score-col", "rn"),
        error="score column 'rn' not found",
    ),
    Case(
        "binarize-out-is-a-file",
        "--out names an existing file",
        _out_is_a_file,
        error="is a file; give a folder",
    ),
    Case(
        "binarize-vote-too-many",
        "--vote 3 with one score",
        lambda d: _binarize(
            d, [ok(i % 2, response=f"r{i}") for i in range(6)], "--score-col", "rm", "--vote", "3"
        ),
        error="--vote 3 needs at least 3 score columns",
    ),
    Case(
        "binarize-every-score-bad",
        "no usable row at all: finishes with 0 pairs",
        lambda d: _binarize(
            d, [ok(i, rm="x") for i in range(4)], "--score-col", "rm", "--format", "trl-dpo"
        ),
        pools=0,
        rejects=[("layout:long", i, "rm", "score rm is not a number") for i in range(4)],
    ),
    Case(
        "binarize-damaged-manifest",
        "a work directory whose manifest is garbage: started over",
        _damaged_workdir,
        pools=3,
    ),
]


@dataclass
class Outcome:
    code: int
    stderr: str
    stdout: str
    rejects: list[dict]
    pools: int | None
    funnel_ok: bool


def run(case: Case, folder: Path, in_process: bool = False) -> Outcome:
    """Run ``case`` as a user would (a fresh process) in ``folder``; ``in_process``: the
    ``prefdata`` commands through :func:`prefdata.cli.main` in this process (faster; an
    exception that escapes is reported as a traceback), with ``case.env`` set."""
    argv = case.make(folder)
    if in_process and argv[0] != "binarize":
        done = _in_process(argv, case.env)
    else:
        env = {**os.environ, **case.env, "PYTHONPATH": str(ROOT)}
        env.pop("PREFDATA_DEBUG", None)
        if argv[0] == "binarize":
            cmd = [sys.executable, str(ROOT / "recipes" / "binarize.py"), *argv[1:]]
        else:
            cmd = [sys.executable, "-m", "prefdata.cli", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=folder)
    rejects, pools, funnel_ok = [], None, True
    if argv[0] == "convert" and done.returncode == 0:
        out = Path(argv[argv.index("--out") + 1])
        pools = pq.read_metadata(out).num_rows
        rej = out.with_name(out.stem + ".rejects.parquet")
        rejects = pq.read_table(rej).to_pylist() if rej.exists() else []
        line = done.stdout.splitlines()[-1]
        funnel_ok = _funnel_adds_up(line, len(rejects))
    elif argv[0] == "binarize" and done.returncode == 0:
        out = Path(argv[argv.index("--out") + 1])
        rejects = [r for r in pq.read_table(out / "rejects.parquet").to_pylist()]
        summary = json.loads((out / "summary.json").read_text())
        pools = summary["pairs"]
        funnel_ok = all(
            e["rows_in"] == e["rows_out"] + e["rows_rejected"] for e in summary["funnel"]
        ) and sum(e["rows_rejected"] for e in summary["funnel"]) == len(rejects)
    return Outcome(done.returncode, done.stderr, done.stdout, rejects, pools, funnel_ok)


def _in_process(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import traceback

    from prefdata.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in [*env, "PREFDATA_DEBUG"]}
    os.environ.update(env)
    os.environ.pop("PREFDATA_DEBUG", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception:  # noqa: BLE001 - reported as the traceback a user would see
                traceback.print_exc()
                code = 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _funnel_adds_up(line: str, n_rejects: int) -> bool:
    """``read: A in -> B out, C rejected; layout:x: B in -> D out, E rejected | ...``"""
    import re

    steps = re.findall(r"(\d+) in -> (\d+) out, (\d+) rejected", line)
    if len(steps) != 2:
        return False
    (a, b, c), (b2, d, e) = [tuple(map(int, s)) for s in steps]
    return a == b + c and b == b2 and b2 == d + e and c + e == n_rejects


def verdict(case: Case, got: Outcome) -> tuple[bool, str]:
    """(as expected, what happened) for the table and the test."""
    err_lines = [line for line in got.stderr.splitlines() if line.strip()]
    traceback = "Traceback (most recent call last)" in got.stderr
    if case.error is not None and case.error.startswith("@validate:"):
        want = case.error.removeprefix("@validate:")
        good = got.code == 1 and want in got.stdout and not traceback
        return good, f"exit {got.code}: {got.stdout.splitlines()[0] if got.stdout else ''}"
    if case.error is not None:
        good = (
            got.code == 2
            and not traceback
            and len(err_lines) == 1
            and ": error: " in err_lines[0]
            and case.error in err_lines[0]
        )
        return good, f"exit {got.code}: {err_lines[-1] if err_lines else '(no message)'}"
    if got.code != 0 or traceback:
        return False, f"exit {got.code}: {(err_lines or ['?'])[-1]}"
    want = sorted(case.rejects, key=lambda r: (r[1], r[0]))
    have = sorted(got.rejects, key=lambda r: (r["row"], r["stage"]))
    same = len(want) == len(have) and all(
        (w[1] < 0 or w[1] == h["row"])
        and w[0] == h["stage"]
        and w[2] == h["field"]
        and h["reason"].startswith(w[3]) | (w[1] < 0 and w[3] in h["reason"])
        for w, h in zip(want, have, strict=False)
    )
    pools_ok = case.pools is None or case.pools < 0 or got.pools == case.pools
    if case.pools == -1:
        pools_ok = (got.pools or 0) > 0
    summary = f"exit 0: {got.pools} out, {len(have)} rejects"
    if have:
        summary += ": " + "; ".join(
            f"{h['stage']} row {h['row']} {h['field'] or '-'}: {h['reason'][:60]}" for h in have[:3]
        )
    return same and pools_ok and got.funnel_ok, summary


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            folder = Path(tmp) / case.name
            folder.mkdir()
            good, what = verdict(case, run(case, folder))
            rows.append((case, good, what))
    print("| # | case | input | outcome | verdict |")
    print("|---|---|---|---|---|")
    for i, (case, good, what) in enumerate(rows, 1):
        what = what.replace("|", "\\|").replace("\n", " ")
        print(f"| {i} | {case.name} | {case.what} | {what[:160]} | {'ok' if good else 'WRONG'} |")
    bad = sum(not g for _, g, _ in rows)
    print(f"\n{len(rows)} cases, {len(rows) - bad} as expected, {bad} not")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
