"""``python -m allo_lightning.html DIR [COMMAND]``: (re)build DIR/report.html from a command's outputs."""

import sys
from pathlib import Path

from .build import MARKERS, PAGE_FILES, write_report
from .page import FILES_DIR, VIEWER

USAGE = """usage: python -m allo_lightning.html DIR [COMMAND]

(Re)build DIR/report.html from the outputs a command wrote in the folder DIR. COMMAND (predict, heads,
fit, evaluate or report) picks the page when several commands wrote into DIR; without it the page is
that of predict, heads or report, else fit or evaluate, whichever outputs are there."""

FILES = {"predictions.json": "predict", "heads.json": "heads", "report.json": "report"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        raise SystemExit(0)
    if not argv:
        _fail("give the output folder of a command: python -m allo_lightning.html DIR [COMMAND] (see --help).")
    out = Path(argv[0])
    if not out.is_dir():
        _fail(f"{out}: no such folder. Give the output folder of a command (e.g. outputs/smoke).")
    if len(argv) > 2:
        _fail(f"unexpected argument {argv[2]!r}. Usage: python -m allo_lightning.html DIR [COMMAND].")
    if len(argv) > 1 and argv[1] not in MARKERS:
        _fail(f"unknown command {argv[1]!r}: give one of {', '.join(MARKERS)} (or leave it out).")
    command = argv[1] if len(argv) > 1 else next((c for f, c in FILES.items() if (out / f).is_file()), None)
    if command is None and (out / "metrics.json").is_file():
        command = "fit" if (out / "training_log").is_dir() or (out / "test_scores.csv").is_file() else "evaluate"
    if command is None:
        _fail(f"{out}: no outputs of predict, heads, fit, evaluate or report found. Give the output folder of one "
              "of them (and optionally the command).")
    if not (out / MARKERS[command]).is_file():
        _fail(f"{out}: no {MARKERS[command]}, so not an output folder of {command}. Give the folder {command} wrote.")
    from ..errors import InputError, OutputError
    from ..outputs import check_out_files

    try:  # no page file written through a link planted in the folder (report_files -> elsewhere)
        check_out_files(out, [*PAGE_FILES, f"{FILES_DIR}/{VIEWER}", f"{FILES_DIR}/3Dmol-LICENSE.txt"], True,
                        MARKERS[command], flag="DIR")
    except OutputError as e:
        _fail(str(e))
    try:
        print(write_report(out, command))
    except InputError as e:  # a damaged table of the run (tables.iter_csv)
        _fail(str(e))
    except OSError as e:  # an output of the run missing or unreadable, or the folder not writable
        _fail(f"{e.filename or out}: {e.strerror or e}. Check the folder and its files.")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
