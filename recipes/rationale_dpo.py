"""DPO pairs with rationales: why the chosen response is better, written by a judge model.

Pairs are built as ``binarize.py`` builds them (degenerate candidates dropped, scores
z-normalised, best against worst by their mean, or --score), then a judge model writes a
short rationale for each pair ("Data-Centric Human Preference Optimization with
Rationales"; the two responses are shown in a random order per pair, so the position does
not give the answer away). The pairs are written for TRL DPO with the ``rationale`` column
kept beside them.

    # offline: the bundled sample, with any small local chat model as the judge
    python recipes/rationale_dpo.py --sample --judge-model ./judge --out out/rationale

    # a served judge (an OpenAI-compatible server; the key from the named variable)
    python recipes/rationale_dpo.py --input scored.parquet --layout long --score-col rm \\
        --judge-backend openai --judge-model Qwen2.5-72B-Instruct \\
        --base-url http://localhost:8000/v1 --api-key-env JUDGE_KEY --out out/rationale
"""

from __future__ import annotations

import sys

from prefdata.construct import Pairs
from prefdata.generate import make_backend
from prefdata.generate.base import GenerationConfig
from prefdata.rationale import Rationales
from prefdata.recipe import (
    finish,
    main_of,
    ranked_pools,
    recipe_parser,
    run_stages,
)


def build_parser():
    p = recipe_parser(__doc__.split("\n\n")[0], formats=("trl-dpo",), ranked=True)
    c = p.add_argument_group("pairs and rationales")
    c.add_argument("--judge-model", required=True, help="the model that writes rationales")
    c.add_argument("--judge-backend", choices=("transformers", "vllm", "openai"),
                   default="transformers")  # fmt: skip
    c.add_argument("--base-url", help="the server (openai backend)")
    c.add_argument("--api-key-env", help="environment variable holding the server's key")
    c.add_argument("--max-tokens", type=int, default=256, help="rationale length at most")
    c.add_argument("--seed", type=int, default=0)
    return p


def run(args) -> int:
    stages, rank_by = ranked_pools(args)
    options = {"api_key_env": args.api_key_env} if args.judge_backend == "openai" else {}
    judge = make_backend(args.judge_backend, args.judge_model, base_url=args.base_url, **options)
    stages += [
        Pairs("best-worst", score=rank_by),
        Rationales(
            backend=judge,
            seed=args.seed,
            generation=GenerationConfig(max_tokens=args.max_tokens, temperature=0.7),
        ),
    ]
    result = run_stages(args, stages, "rationale")
    pairs = result.read()
    exports = [(f, pairs, {"keep": ["rationale"]}) for f in (args.format or args.default_formats)]
    return finish(args, result, exports=exports)


main = main_of("rationale_dpo", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
