"""The ``labkit`` command: list studies and their parameters, reproduce them, register the kernel."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from labkit.core.errors import LabkitError
from labkit.core.params import PRESET_HELP, PRESETS, list_specs, load_spec


def _format_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def cmd_list(args) -> int:
    specs = [load_spec(s) for s in args.studies] if args.studies else list_specs()
    print("Presets: " + "; ".join(f"{p} ({PRESET_HELP[p]})" for p in PRESETS))
    for spec in specs:
        print(f"\n{spec.name}  [{spec.notebook}]\n  {spec.title}\n  headline metric: {spec.headline}")
        if args.brief:
            continue
        for name, param in spec.params.items():
            values = param.presets
            if len({json.dumps(v) for v in values.values()}) == 1:
                shown = _format_value(values["default"])
            else:
                shown = ", ".join(f"{p}={_format_value(values[p])}" for p in PRESETS)
            limits = []
            if param.choices:
                limits.append("one of " + "/".join(map(str, param.choices)))
            if param.min is not None:
                limits.append(f">= {param.min}")
            if param.max is not None:
                limits.append(f"<= {param.max}")
            extra = f" ({', '.join(limits)})" if limits else ""
            print(f"  {name} ({param.type}): {shown}{extra}")
            if param.help:
                print(textwrap.indent(textwrap.fill(param.help, 90), "      "))
    return 0


def _preset_from_params(args) -> None:
    """``-p preset paper`` means ``--preset paper`` (the parameters cell of every notebook has ``preset``)."""
    given = [value for name, value in getattr(args, "param", []) if name == "preset"]
    if given:
        args.preset = given[-1]
        args.param = [(name, value) for name, value in args.param if name != "preset"]


def _grid_overrides(args) -> list[tuple[str, str]]:
    """``--executor/--workers/--scheduler/--device`` as the common study parameters they set."""
    pairs = list(args.param)
    for name in ("executor", "workers", "scheduler", "device"):
        value = getattr(args, name, None)
        if value is not None:
            pairs.append((name, str(value)))
    return pairs


def cmd_reproduce(args) -> int:
    from labkit.runner import reproduce, summary_table

    results = reproduce(
        args.studies or None,
        preset=args.preset,
        overrides=_grid_overrides(args),
        jobs=args.jobs,
        force=args.force,
        progress=not args.quiet,
        publish=True if args.publish else None,
        out=args.out,
    )
    print()
    print(summary_table(results))
    return 1 if any(r.status == "failed" for r in results) else 0


def cmd_sweep(args) -> int:
    from labkit.core.errors import ParameterError
    from labkit.runner import sweep

    spec = load_spec(args.study)
    axes, fixed = {}, {}
    for name, text in args.param:
        if name not in spec.params:
            raise ParameterError(f"study '{spec.name}' has no parameter '{name}' (see `labkit list {spec.name}`)")
        from labkit.core.params import _yaml

        value = _yaml(text)
        if isinstance(value, list) and not spec.params[name].type.startswith("list["):
            axes[name] = value
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            axes[name] = value  # a list parameter swept over several lists
        else:
            fixed[name] = spec.params[name].parse_cli(text)
    if not axes:
        raise ParameterError("a sweep needs at least one -p NAME '[v1, v2]' with several values")
    folder, table = sweep(
        spec.name,
        axes,
        preset=args.preset,
        fixed=fixed,
        executor=args.executor or "serial",
        workers=args.workers,
        scheduler=args.scheduler,
    )
    print(table.to_markdown(index=False))
    print(f"\nsweep table: {folder}/sweep.md")
    return 1 if (table["status"] != "ok").any() else 0


def cmd_plan(args) -> int:
    """Print each study's grids and their real budget (tasks, steps, parameters, FLOPs, GPU hours)."""
    import time

    from labkit.core.plan import ASSUMPTION, render_markdown, render_text
    from labkit.runner import parse_overrides, study_plan

    specs = [load_spec(s) for s in args.studies] if args.studies else list_specs()
    per_study = parse_overrides(args.param, specs)
    rows = []
    for spec in specs:
        t0 = time.perf_counter()
        plans, warnings = study_plan(spec.name, args.preset, per_study[spec.name], args.allow_degenerate)
        rows.append((spec.name, args.preset, plans, warnings))
        if not args.markdown:
            print(render_text(spec.name, args.preset, plans, warnings))
            print(f"  (planned in {time.perf_counter() - t0:.1f} s)\n")
    if args.markdown:
        print(render_markdown(rows))
    else:
        print(ASSUMPTION)
    return 0


def cmd_install_kernel(args) -> int:
    """Register the ``labkit`` Jupyter kernel inside this environment, with the TCP warning silenced."""
    import subprocess
    from pathlib import Path

    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            "--sys-prefix",
            "--name",
            "labkit",
            "--display-name",
            "labkit (Python 3.11)",
        ],
        check=True,
        capture_output=True,
    )
    spec_file = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "labkit" / "kernel.json"
    spec = json.loads(spec_file.read_text())
    if "--IPKernelApp.log_level=ERROR" not in spec["argv"]:
        spec["argv"].append("--IPKernelApp.log_level=ERROR")
    spec_file.write_text(json.dumps(spec, indent=1))
    print(f"registered kernel 'labkit' at {spec_file.parent}")
    return 0


def _grid_options(parser, device: bool = True) -> None:
    parser.add_argument(
        "--executor",
        choices=("serial", "processes", "dask"),
        help="how each study's grid of tasks runs (default: the preset's, serial)",
    )
    parser.add_argument("--workers", type=int, help="processes or Dask workers (default: one per core)")
    parser.add_argument(
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786), or slurm / pbs for a "
        "dask-jobqueue cluster from your dask config",
    )
    if device:
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where models run (default auto)")


def _param_option(parser, value: str, help: str) -> None:
    """``-p NAME VALUE``, repeatable: the same option on every subcommand that takes study parameters."""
    parser.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", value), default=[], help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="studies, presets and parameters with defaults and meanings")
    p_list.add_argument("studies", nargs="*")
    p_list.add_argument("--brief", action="store_true", help="studies only, no parameters")
    p_list.set_defaults(func=cmd_list)

    p_rep = sub.add_parser("reproduce", help="run study notebooks with papermill into reports/<study>/")
    p_rep.add_argument("studies", nargs="*", help="studies to run (default: all, in notebook order)")
    p_rep.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    _param_option(p_rep, "VALUE", "override a parameter (YAML value: 3, 1e-4, true, '[0, 1]'); repeatable")
    p_rep.add_argument("--jobs", type=int, default=1, help="studies run in parallel (default 1)")
    p_rep.add_argument("--force", action="store_true", help="rerun even if parameters and code are unchanged")
    p_rep.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    p_rep.add_argument(
        "--publish", action="store_true", help="replace reports/<study>/ even at a preset other than default"
    )
    p_rep.add_argument("--out", metavar="DIR", help="write each study's run to DIR/<study>/ (never publishes)")
    _grid_options(p_rep)
    p_rep.set_defaults(func=cmd_reproduce)

    p_sw = sub.add_parser("sweep", help="run the product of parameter values as one grid into a run folder")
    p_sw.add_argument("study")
    p_sw.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    _param_option(p_sw, "VALUES", "a parameter and its values as a YAML list ('[1, 2]'); a single value is held fixed")
    _grid_options(p_sw, device=False)
    p_sw.set_defaults(func=cmd_sweep)

    p_plan = sub.add_parser("plan", help="what a preset will really do: tasks, steps, FLOPs, GPU hours (no training)")
    p_plan.add_argument("studies", nargs="*", help="studies to plan (default: all)")
    p_plan.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    _param_option(p_plan, "VALUE", "override a parameter (YAML value), as for reproduce; repeatable")
    p_plan.add_argument(
        "--allow-degenerate",
        action="store_true",
        help="print degenerate budgets as warnings instead of refusing them (exit code 2)",
    )
    p_plan.add_argument("--markdown", action="store_true", help="one Markdown table over the studies (for the README)")
    p_plan.set_defaults(func=cmd_plan)

    p_kernel = sub.add_parser("install-kernel", help="register the 'labkit' Jupyter kernel in this environment")
    p_kernel.set_defaults(func=cmd_install_kernel)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _preset_from_params(args)
    try:
        return args.func(args)
    except LabkitError as exc:
        print(f"labkit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
