"""rclib's command line: the same API the notebooks use.

    rclib answer --image PATH --question TEXT [--model NAME_OR_PATH] [--method rc] [--compare] [--out DIR] [--json]
    rclib demo [--out out]            every bundled sample and a few ShapesWorld scenes, RC vs all tokens
    rclib bench [--methods ...] [--budgets ...] [--n N] [--seed S] [--out DIR]
    rclib figures [--out figures]     the notebooks' figures as PNG files
    rclib report [NOTEBOOK ...] [--out out/report]   notebooks run and written without code as a static site
    rclib train-shapes [--out out/shapes-models] [--quick]
    rclib speed [--quick] [--device cuda --dtype fp16]   the speed benchmark -> benchmarks/results/
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import traceback
from pathlib import Path

from rclib.bench import BenchConfig
from rclib.eval.commands import add_commands
from rclib.methods import METHODS, method_table
from rclib.models.prompts import IMAGE_PREPROCESS, PROMPT_FORMATS
from rclib.report import INDEX, NOTEBOOKS, REPORTED, build_report
from rclib.speed import add_command as add_speed_command


def record(model, run, b: int = 0, image: str = "<array>", full_text: str | None = None) -> dict:
    """The result.json record of sample ``b`` of a :class:`~rclib.models.Run`: what was asked, what the LLM saw,
    what it answered, how long each stage took (for the whole batch)."""
    result = run.result[b]
    entry = {
        "model": model.name, "text_encoder": model.text_encoder_name, "importance": model.family.importance,
        "method": run.method, "budget": run.budget, "options": run.options,
        "image": image, "question": run.encoded.questions[b],
        **run.counts(b),  # in the model's units: row-end tokens count where its LLM reads them
        "tokens_per_layer": run.tokens_per_layer[b].tolist(), "equivalent_tokens": float(run.equivalent_tokens[b]),
        "kept_indices": result.kept_indices[0].tolist(), "recovered_indices": result.recovered_indices[0].tolist(),
        "answer": run.texts[b],
        "seconds": run.seconds,
    }
    if full_text is not None:
        entry["answer_full"] = full_text
    return entry


def answer_one(model, image, question: str, method: str = "rc", budget: int | None = None, compare: bool = False,
               **options) -> tuple[dict, object]:
    """Answer one question about one image (and with all tokens when ``compare``): (result.json record, run)."""
    run = model.answer(image, question, method, budget, **options)
    full_text = model.run(run.encoded, "full").texts[0] if compare else None
    return record(model, run, 0, str(image) if isinstance(image, (str, Path)) else "<array>", full_text), run


def write_outputs(model, out: Path, entry: dict, run, command: str = "answer") -> None:
    """result.json and the figures (score heatmaps, token-fate map) of one answered question."""
    from rclib import viz
    from rclib.gallery import answer_figures
    from rclib.outputs import output_folder, write_json

    with output_folder(out, command) as folder:  # all or nothing: the previous complete folder stays until this one is
        write_json(folder / "result.json", entry)
        for name, figure in answer_figures(model, run).items():
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
            viz.close(figure)


def print_record(record: dict, said: set | None = None) -> None:
    """One answered question for the terminal. A record with ``caveats`` (see :func:`rclib.examples.caveats`) shows
    the model's outputs as what they are, not as answers, with the reasons and where real answers come from.
    said: caveats printed before (a demo's earlier examples): each is printed once, then referred to; the set grows."""
    from rclib.examples import REAL_CHECKPOINT

    kept = METHODS[record["method"]].kept_by or "kept"  # what picked the tokens it kept unchanged
    counts = (f"{record['n_input_tokens']} -> {record['n_visual']} {kept} / {record['n_text']} text / "
              f"{record['n_merged']} merged -> {record['n_output_tokens']}")
    seconds = " ".join(f"{k} {v:.3f}s" for k, v in record["seconds"].items())
    caveats = record.get("caveats", [])

    def shown(text: str) -> str:
        return f'(not an answer; the model said "{text}")' if caveats else text

    print(f"Q: {record['question']}")
    if "answer_full" in record:
        print(f"   all tokens : {shown(record['answer_full'])}")
    print(f"   {record['method']:<10} : {shown(record['answer'])}    [{counts}]  ({seconds})")
    if "answer_truth" in record:
        print(f"   truth      : {record['answer_truth']}")
    said = set() if said is None else said
    fresh = [caveat for caveat in caveats if caveat not in said]
    for caveat in fresh:
        print(f"   note       : {caveat}")
    if len(fresh) < len(caveats):
        print("   note       : not an answer, as said above")
    if fresh and not said:
        print(f"   real answers need {REAL_CHECKPOINT}")
    said.update(caveats)


def load_model(args):
    """The model the command line names, with LLaVA-1.5's evaluation settings where given (else the registry's)."""
    from rclib.models import load

    return load(args.model, args.text_encoder, image_preprocess=args.image_preprocess, prompt_format=args.prompt_format)


def method_options(args) -> dict:
    """The method options the command line sets (rc's preset)."""
    return {"preset": args.preset} if args.preset else {}


def cmd_answer(args) -> None:
    from rclib.images import open_image
    from rclib.outputs import to_json
    from rclib.questions import check_question
    from rclib.examples import caveats

    model = load_model(args)
    question = check_question(model, args.question)  # fits the LLM, no chat markers; CLIP truncation reported
    image = args.image_read if hasattr(args, "image_read") else open_image(args.image)  # read once (a pipe)
    entry, run = answer_one(model, image.image, args.question, args.method, args.budget, args.compare,
                            **method_options(args))
    entry.update(image=args.image, image_notes=image.notes, question_check=question.record())
    entry["caveats"] = caveats(model, args.question, scene=False)  # an image file: taken for a photograph
    if args.out:
        write_outputs(model, Path(args.out), entry, run)
    if args.json:
        print(to_json(entry))
    else:
        print_record(entry)


def cmd_demo(args) -> None:
    """RC against all tokens on the example scenes and photographs; on a model that cannot answer about an example
    (the embedded one on a photograph) its figures are written and its outputs are labelled as no answers."""
    from rclib.examples import caveats, english_list, known_words, learned_families
    from rclib.shapes.world import FAMILIES

    model = load_model(args)
    print(f"model {model.name} with text tower {model.text_encoder_name}; method {args.method}")
    words = known_words(model)
    if words is not None:
        learned = learned_families(model)
        untrained = [f for f in FAMILIES if f not in learned]
        print(f"this model answers {english_list(learned)} questions about ShapesWorld scenes (the scenes below), "
              f"in these {len(words)} words: {' '.join(words)}")
        if untrained:
            print(f"it did not learn {english_list(untrained)} questions (see data/models/README.md)")
        print("on the photographs after the scenes its outputs are not answers: their figures show what RC keeps")
    print()
    said = set()  # caveats printed once, at the first example they apply to
    for name, example in demo_examples(args.model):
        entry, run = answer_one(model, example.image, example.question, args.method, args.budget, compare=True)
        entry["image"] = str(example.image) if isinstance(example.image, Path) else example.name
        if example.answer is not None:
            entry["answer_truth"] = example.answer
        entry["caveats"] = caveats(model, example.question, example.scene)
        write_outputs(model, Path(args.out) / name, entry, run, "demo")
        print(f"[{name}]", end=" ")
        print_record(entry, said)
    print(f"\nwrote result.json and figures for each example under {args.out}/")


def demo_examples(model: str) -> list[tuple[str, object]]:
    """(output subfolder, example) of every example ``rclib demo`` answers for ``model``."""
    from rclib.examples import examples_for_model

    return [(f"{i:02d}-" + "".join(c if c.isalnum() else "-" for c in example.name.split(":")[0]).strip("-"), example)
            for i, example in enumerate(examples_for_model(model, n_scenes=3))]


def table_lines(rows: list[dict], markdown: bool = False) -> list[str]:
    """Bench rows as a table, every metric column the rows have in their order: fixed-width text, or
    Markdown (`results.md`, the form benchmarks/results/ keeps) with the 95% interval of every accuracy and
    share beside it, and n."""
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in ("method", "budget", "n", "ci")]
    names = ["method", "budget", *(c.removeprefix("accuracy_") for c in columns)]
    if markdown:
        def value(r: dict, c: str) -> str:
            if c not in r:
                return "-"
            low_high = r.get("ci", {}).get(c)
            return f"{r[c]:.3f} [{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else f"{r[c]:.3f}"
        cells = [[r["method"], str(r["budget"]), str(r["n"]), *(value(r, c) for c in columns)] for r in rows]
        names.insert(2, "n")
        return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names), *("| " + " | ".join(c) + " |" for c in cells)]
    cells = [[r["method"], str(r["budget"]), *(f"{r[c]:.3f}" if c in r else "-" for c in columns)] for r in rows]
    widths = [-12, 8, *[9] * len(columns)]  # negative: left-aligned; column names are cut to the width
    def line(values: list[str], cut: bool) -> str:
        return " ".join(f"{v[:abs(w)] if cut else v:{'<' if w < 0 else '>'}{abs(w)}}" for v, w in zip(values, widths))
    return [line(names, cut=True), *(line(c, cut=False) for c in cells)]


def flat_row(row: dict) -> dict:
    """A bench row for CSV: each interval as <metric>_ci_low / <metric>_ci_high columns."""
    flat = {k: v for k, v in row.items() if k != "ci"}
    for name, (low, high) in row.get("ci", {}).items():
        flat[f"{name}_ci_low"], flat[f"{name}_ci_high"] = low, high
    return flat


def cmd_bench(args) -> None:
    from rclib import viz
    from rclib.bench import run_bench
    from rclib.outputs import output_folder, write_json

    config = BenchConfig(methods=tuple(args.methods), budgets=tuple(args.budgets),
                         families=tuple(args.families) if args.families else None, n=args.n, seed=args.seed)
    rows = run_bench(load_model(args), config)
    out = Path(args.out)
    with output_folder(out, "bench") as folder:
        write_json(folder / "results.json", rows)
        write_json(folder / "config.json", vars(config))
        flat = [flat_row(r) for r in rows]
        with open(folder / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in flat for k in r)))
            writer.writeheader()
            writer.writerows(flat)
        (folder / "results.md").write_text("\n".join(table_lines(rows, markdown=True)) + "\n")
        viz.accuracy_vs_tokens(rows).savefig(folder / "accuracy_vs_tokens.png", dpi=110, bbox_inches="tight")
    print("\n".join(table_lines(rows)))
    print(f"wrote {out}/results.json, results.csv, results.md, config.json, accuracy_vs_tokens.png")


def cmd_methods(args) -> None:
    print(method_table(METHODS))


def cmd_figures(args) -> None:
    from rclib.gallery import render_figures
    from rclib.outputs import output_folder

    with output_folder(Path(args.out), "figures") as folder:  # all or nothing: no half-written PNG
        paths = render_figures(folder, model=args.model)
    for path in paths:
        print(Path(args.out) / path.name)


def cmd_report(args) -> None:
    out = build_report(args.notebooks, args.out)
    for path in args.notebooks:
        print(out / f"{Path(path).stem}.html")
    print(out / INDEX)


def cmd_train_shapes(args) -> None:
    from rclib.shapes.train import train

    train(args.out, quick=args.quick)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rclib", description="Recoverable Compression for LLaVA-style models")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp, method=True):
        sp.add_argument("--model", default="shapes", help="registry name (shapes, llava-1.5-7b, ...), hub id or folder")
        sp.add_argument("--text-encoder", default=None, help="CLIP text tower: registry name, hub id or folder "
                        "(default: the model's registered pairing)")
        sp.add_argument("--image-preprocess", choices=IMAGE_PREPROCESS, default=None,
                        help="pad: LLaVA-1.5's pad-to-square with the mean colour; crop: the processor's centre crop "
                        "(default: the registry's setting, pad for LLaVA-1.5, else the checkpoint's processor)")
        sp.add_argument("--prompt-format", choices=PROMPT_FORMATS, default=None,
                        help="vicuna_v1: LLaVA-1.5's evaluation prompt with its system prompt; chat_template: the "
                        "checkpoint's (default: the registry's setting)")
        if method:
            sp.add_argument("--method", default="rc", choices=[m for m in METHODS if "target" not in METHODS[m].needs],
                            help="compression method (`rclib methods` describes each; oracle needs a scene's "
                            "ground truth: rclib bench)")
            sp.add_argument("--budget", type=int, default=None, help="fixed number of output tokens (default adaptive)")
            sp.add_argument("--preset", choices=("paper", "released"), default=None,
                            help="rc only: 'released' reproduces the authors' released code (docs/released.md)")

    sp = sub.add_parser("answer", help="answer one question about one image")
    sp.add_argument("--image", required=True)
    sp.add_argument("--question", required=True)
    model_args(sp)
    sp.add_argument("--compare", action="store_true", help="also answer with all tokens")
    sp.add_argument("--out", default=None, help="write result.json and figures here")
    sp.add_argument("--json", action="store_true", help="print the result record as JSON")
    sp.set_defaults(run=cmd_answer)

    sp = sub.add_parser("demo", help="RC vs all tokens on the bundled samples, outputs under --out")
    model_args(sp)
    sp.add_argument("--out", default="out")
    sp.set_defaults(run=cmd_demo)

    sp = sub.add_parser("bench", help="ShapesWorld benchmark: methods x budgets")
    model_args(sp, method=False)
    sp.add_argument("--methods", nargs="+", default=list(BenchConfig.methods), choices=list(METHODS),
                    metavar="METHOD", help=f"methods to compare (default all: {' '.join(METHODS)})")
    sp.add_argument("--families", nargs="+", default=None, help="question families (default all of the world's)")
    sp.add_argument("--budgets", nargs="+", default=list(BenchConfig.budgets),
                    help="'adaptive', a token count, or a share of N like 64/576")
    sp.add_argument("--n", type=int, default=BenchConfig.n, help="held-out questions")
    sp.add_argument("--seed", type=int, default=BenchConfig.seed, help="scene stream of the held-out questions")
    sp.add_argument("--out", default="out/bench")
    sp.set_defaults(run=cmd_bench)

    sp = sub.add_parser("methods", help="the registered methods: where they prune, what they need, their papers")
    sp.set_defaults(run=cmd_methods)

    sp = sub.add_parser("figures", help="render the notebooks' figures to PNG files")
    sp.add_argument("--model", default="shapes")
    sp.add_argument("--out", default="figures")
    sp.set_defaults(run=cmd_figures)

    sp = sub.add_parser("report", help="run notebooks and write them without their code as one static HTML site")
    sp.add_argument("notebooks", nargs="*", default=[str(NOTEBOOKS / f"{name}.ipynb") for name in REPORTED],
                    metavar="NOTEBOOK", help="the .ipynb files, in the index's order (default notebooks 02-04)")
    sp.add_argument("--out", default="out/report", help="the site's folder, replaced as a whole")
    sp.set_defaults(run=cmd_report)

    sp = sub.add_parser("train-shapes", help="train the embedded ShapesWorld models from scratch")
    sp.add_argument("--out", default="out/shapes-models", help="a new or empty folder (never the shipped "
                    "data/models: copy a finished run's shapes-clip/ and shapes-llava/ into data/models)")
    sp.add_argument("--quick", action="store_true", help="a few steps only (CI smoke test)")
    sp.set_defaults(run=cmd_train_shapes)

    add_commands(sub)  # rclib eval, rclib table
    add_speed_command(sub)  # rclib speed
    for command in sub.choices.values():  # --debug also after the command; SUPPRESS keeps the one given before
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="on an error, show the full traceback")
    return p


MAX_TOKENS = 100_000  # a budget above any vision tower's token count
LIMITS = {  # numeric options (one number or a list) -> (least, most); the most bounds memory and time
    "budget": (1, MAX_TOKENS), "n": (1, 20_000), "shapes_n": (1, 20_000),  # a held-out question takes ~40 kB
    "processes": (1, 1024), "batch_size": (1, 4096), "limit": (1, 10**9), "threads": (1, os.cpu_count() or 1),
    "repeats": (1, 10_000), "batches": (1, 4096), "new_tokens": (1, 4096), "seed": (0, 2**32 - 1)}
WHOLE_FOLDER_OUTPUTS = ("answer", "bench", "table", "figures", "report")  # --out replaced as a whole (rclib.outputs)
RESERVED_MODEL_ARGS = {"pretrained": "--model", "method": "--methods", "budget": "--budgets"}  # rclib eval sets them
HINTS = {  # error types that do not say what to do, and what to do
    "MemoryError": "out of memory: free memory, or use a smaller image, model or --n",
    "SafetensorError": "a safetensors file is damaged or truncated: download or save it again",
    "JSONDecodeError": "a JSON file is not valid JSON",
    "UnicodeDecodeError": "a file or argument is not UTF-8 text",
    "OutOfMemoryError": "out of memory: try a smaller model, float16 or fewer questions at once",
}


def preflight(args) -> None:
    """The cheap checks, before any model loads: the counts, the image, the question, the output paths."""
    from rclib.images import open_image
    from rclib.outputs import check_output_folder, check_writable
    from rclib.questions import check_question_text

    check_numbers(args)
    check_method_choice(args)
    if getattr(args, "question", None) is not None:
        check_question_text(args.question)
    if hasattr(args, "prompt_format"):  # the commands that load a model: answer, demo, bench
        check_model_files(args.model, args.text_encoder, getattr(args, "question", None), args.prompt_format)
    if getattr(args, "image", None) is not None:
        args.image_read = open_image(args.image)  # read once: a pipe cannot be read again
    for folder in getattr(args, "folders", None) or ():
        if not Path(folder).is_dir():
            raise ValueError(f"no such folder {folder!r}: pass the folders rclib eval (or lmms-eval) wrote")
    if getattr(args, "out", None) is not None:
        if args.command in WHOLE_FOLDER_OUTPUTS:
            check_output_folder(args.out, args.command)
        else:
            check_writable(args.out)
    if args.command == "demo":
        for name, _ in demo_examples(args.model):
            check_output_folder(Path(args.out) / name, "demo")


def check_model_files(model: str, text_encoder: str | None, question: str | None = None,
                      prompt_format: str | None = None) -> None:
    """A local model folder (given, or a registry name's) is of a family rclib runs, with readable safetensors headers
    and the tokenizer and image processor files it needs, and the question passes what its files alone can check
    (``check_question_files``); a local transformers text tower folder has its tokenizer files. Hub ids are checked
    when loading."""
    from rclib.models.loading import check_llava_folder, check_processor_files, read_json
    from rclib.models.registry import MODELS, TEXT_TOWERS, input_defaults, resolve
    from rclib.questions import check_question_files

    folder = Path(resolve(MODELS[model].llava)) if model in MODELS else Path(model).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        check_llava_folder(folder)
        check_processor_files(folder)
        if question is not None:
            prompt_format = prompt_format or input_defaults(model, read_json(folder / "config.json")).prompt_format
            check_question_files(folder, question, prompt_format)
    text_encoder = text_encoder or (MODELS[model].text_tower if model in MODELS else None)
    tower = TEXT_TOWERS.get(text_encoder)
    folder = Path(resolve(tower.source)) if tower else Path(text_encoder).expanduser() if text_encoder else None
    if (tower is None or tower.kind == "transformers") and folder is not None and folder.is_dir() \
            and (folder / "config.json").is_file() and not (folder / "open_clip_config.json").is_file():
        check_processor_files(folder, "CLIP text tower")


def check_numbers(args) -> None:
    """Every numeric option within its LIMITS; budgets as text ('adaptive', 64, 64/576) parsed and bounded."""
    from rclib.methods import parse_budget

    for name, (least, most) in LIMITS.items():
        value = getattr(args, name, None)
        for number in value if isinstance(value, list) else [value]:
            if number is not None and not least <= number <= most:
                raise ValueError(f"--{name.replace('_', '-')} must be from {least} to {most:,}, got {number}")
    for budget in getattr(args, "budgets", None) or ():
        tokens = parse_budget(budget, 576)
        if tokens is not None and tokens > MAX_TOKENS:
            raise ValueError(f"budget {budget!r} is over {MAX_TOKENS:,} tokens: pass a count or a share of N up to 1")


def check_method_choice(args) -> None:
    """What the method options say together: a budget a method takes, rc's preset on rc, known families, each
    method and budget once, bench cells that exist, eval model_args that do not override the cell."""
    from rclib.shapes.world import check_families

    method = getattr(args, "method", None)
    if method and args.budget is not None and not METHODS[method].takes_budget:
        raise ValueError(f"--method {method} uses every token: drop --budget {args.budget} or choose another method")
    if method and getattr(args, "preset", None) and method != "rc":
        raise ValueError(f"--preset is an option of rc, not of {method}: drop it or pass --method rc")
    for option in ("methods", "budgets", "families"):
        values = list(getattr(args, option, None) or ())
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"--{option} lists {', '.join(twice)} more than once: give each once")
    if getattr(args, "families", None):
        check_families(args.families)
    if args.command == "bench" and all(METHODS[m].takes_budget and not METHODS[m].adaptive for m in args.methods) \
            and set(args.budgets) == {"adaptive"}:
        raise ValueError(f"{', '.join(args.methods)} take a fixed budget, not 'adaptive': add a --budgets count "
                         "like 64, or a method that adapts (rc, prumerge)")
    if args.command == "eval":
        check_model_args(args.model_args)


def check_model_args(text: str) -> None:
    """``rclib eval --model-args``: comma-separated key=value pairs that leave each cell's model and method alone."""
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = part.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise ValueError(f"--model-args: {part!r} is not key=value; pass e.g. text_encoder=NAME,preset=released")
        if key.strip() in RESERVED_MODEL_ARGS:
            raise ValueError(f"--model-args may not set {key.strip()}: each cell sets it; use "
                             f"{RESERVED_MODEL_ARGS[key.strip()]}")


def error_line(error: BaseException) -> str:
    """One printable line for an error: its message (rclib's say what to fix), or its type with a hint."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        message = f"{error.strerror}: {str(error.filename)!r}; check the path and its permissions"
    else:
        message = str(error) or type(error).__name__
        if type(error).__name__ in HINTS or not isinstance(error, (OSError, ValueError)):
            hint = HINTS.get(type(error).__name__, "if the input is right, this is a bug in rclib")
            message = f"{type(error).__name__}: {message} ({hint}; --debug shows the traceback)"
    line = " ".join(message.split())
    return line.encode("utf-8", "backslashreplace").decode("utf-8")  # arguments that were not UTF-8


def main(argv: list[str] | None = None) -> int:
    """Run a command; any error is one line on stderr and exit code 2 (``--debug``: the traceback first)."""
    args = parser().parse_args(argv)
    try:
        preflight(args)
        args.run(args)
    except KeyboardInterrupt:
        print(f"rclib {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every error ends as one line, the traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"rclib {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2
    return 0
