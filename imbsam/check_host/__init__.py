"""Will this host reproduce the paper? A self-check for a GPU, Ascend or CPU host, in minutes:

    python -m imbsam.check_host [--device auto|CPU|GPU|Ascend] [--out host-check]

1. host: CPU, accelerator, driver, CUDA or CANN, MindSpore, the plugin it loaded, the preflight's verdict on
   this GPU generation, mindspore.run_check();
2. correctness: a few steps of every optimizer of the methods table on the device, in graph and PyNative
   mode, at two rho values, against the same steps in float64 by an independent NumPy reference;
3. speed: img/s of each optimizer's step on ResNet-34 and ResNet-32 at batch 64 and of the test pass, peak
   memory, and the estimated time of the paper's protocol and of the quick run.

It ends with a one-line verdict and writes a bundle to attach to an issue: host-check.md and host-check.json
in --out, with hardware and software versions and no personal data (no host or user name, no paths). It
trains no real run, reads no params.yaml and leaves the DVC workspace and cache alone. Exit status: 0 when
every check passed, 1 when one failed, 2 for bad arguments.
"""

import argparse
import json
import os
import sys
import time
import traceback

from imbsam import registry
from imbsam.durations import format_duration
from imbsam.errors import InputError

SECTIONS = ("host", "correctness", "speed")
DEFAULT_OUT = "host-check"
# Timed steps per row: enough for a steady figure on an accelerator; on the CPU, where a ResNet-34 step takes
# seconds, fewer, so that the check stays within minutes.
DEFAULT_STEPS = {"CPU": 5, "GPU": 20, "Ascend": 20}


def _sections(text):
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [part for part in chosen if part not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(SECTIONS)}, comma-separated")
    return chosen


def _archs(text):
    from imbsam.params import ARCHS

    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    if not chosen or any(arch not in ARCHS for arch in chosen):
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(ARCHS)}, comma-separated")
    return chosen


def _positive(text):
    from imbsam.bench import positive_int

    return positive_int(text)


def parse_args(argv):
    from imbsam.params import TARGETS

    from .speed import ARCHS

    parser = argparse.ArgumentParser(prog="python -m imbsam.check_host", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=TARGETS, default="auto", help="the device to check (default auto)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder of the bundle (default {DEFAULT_OUT})")
    parser.add_argument("--sections", type=_sections, default=SECTIONS,
                        help=f"comma-separated, default all: {','.join(SECTIONS)}")
    parser.add_argument("--archs", type=_archs, default=ARCHS,
                        help=f"networks the speed section measures (default {','.join(ARCHS)})")
    parser.add_argument("--steps", type=_positive,
                        help="timed steps per speed row (default: 5 on the CPU, 20 on an accelerator)")
    return parser.parse_args(argv)


def run(args, say=print):
    """Every section asked for, in order; returns the bundle as a dict. A section that cannot run (no such
    device, a plugin that does not load) is recorded as failed and the later ones are skipped."""
    from imbsam.device.target import setup

    from . import host

    started = time.time()
    bundle = {"imbsam_check_host": 1, "requested_device": args.device, "sections": list(args.sections),
              "host": host.describe()}
    say("== host")
    try:
        device = setup(args.device, "graph")
    except InputError as error:
        bundle["error"] = {"section": "host", "message": host.scrub(str(error))}
        return _finish(bundle, started)
    import mindspore as ms

    target = device["target"]
    bundle["device"] = {key: device[key] for key in ("target", "mindspore", "threads", "onednn_max_cpu_isa")}
    bundle["preflight"] = device["gpus"]
    bundle["host"].update(host.mindspore_facts(ms, target))
    for line in _host_lines(bundle):
        say(f"  {line}")
    sections = {"correctness": _correctness, "speed": _speed}
    for name in args.sections:
        if name in sections:
            say(f"== {name}")
            try:
                bundle[name] = sections[name](target, args, say)
            except Exception as error:  # noqa: BLE001 - a failing section is a finding, reported in the bundle
                bundle["error"] = {"section": name, "message": host.scrub(f"{type(error).__name__}: {error}"),
                                   "traceback": host.scrub(traceback.format_exc())}
                break
    return _finish(bundle, started)


def _correctness(target, args, say):
    from . import correctness

    return {"results": correctness.check(target, progress=say), "tolerances": correctness.TOLERANCES[target]}


def _speed(target, args, say):
    from . import speed

    steps = args.steps or DEFAULT_STEPS[target]
    figures = {}
    for arch in args.archs:
        say(f"  {arch}: {', '.join(registry.names('optimizers'))} and the test pass, {steps} timed steps each, "
            "one process at a time")
        figures[arch] = speed.measure(arch, target, steps)
        for name, row in figures[arch]["rows"].items():
            say(f"    {name:<10} {row['img_per_s']:8.1f} img/s  peak {_memory(row)}")
    return {"steps": steps, "figures": figures, "estimates": speed.estimates(figures)}


def _memory(row):
    if row.get("peak_device_mib") is not None:
        return f"{row['peak_device_mib']:.0f} MiB on the device ({row['peak_rss_mib']:.0f} MiB host RSS)"
    return f"{row['peak_rss_mib']:.0f} MiB RSS"


def _host_lines(bundle):
    facts, device = bundle["host"], bundle["device"]
    cpu = facts["cpu"]
    image = f", the {facts['image']} image" if facts["image"] else ""
    isa = ", ".join(cpu["isa"]) or "no vector extensions"
    lines = [f"CPU: {cpu['model']}, {cpu['cores']} cores ({isa}), {cpu['memory_gib']} GiB",
             f"MindSpore {device['mindspore']} on {device['target']} (Python {facts['python']}, {facts['os']}{image})",
             f"plugins loaded: {', '.join(facts['plugins']) or 'none'}"]
    for gpu in facts["gpus"] or []:
        lines.append(f"GPU {gpu['index']}: {gpu['name']}, compute capability {gpu['compute_capability']}, "
                     f"driver {gpu['driver']}: runs {gpu['runs']}" + (f" ({gpu['why']})" if gpu["why"] else ""))
    if facts["cuda"]:
        libraries = ", ".join(f"{k} {v}" for k, v in facts["cuda"]["libraries"].items()) or "none from PyPI"
        lines.append(f"CUDA: the driver supports {facts['cuda']['driver_supports']}; libraries: {libraries}")
    if facts["ascend"]:
        ascend = facts["ascend"]
        lines.append(f"Ascend: driver {ascend['driver']}, CANN {ascend['cann']}, {ascend['devices']} NPU nodes")
    if facts.get("device_properties"):
        lines.append(f"device: {facts['device_properties']}")
    lines += [f"preflight: {note}" for note in bundle.get("preflight", [])]
    check = facts["run_check"]
    lines.append(f"mindspore.run_check(): {'passed' if check['passed'] else 'FAILED'}: "
                 f"{check['output'].splitlines()[-1] if check['output'] else 'no output'}")
    return lines


def verdict(bundle):
    """(passed, one line)."""
    if "error" in bundle:
        error = bundle["error"]
        return False, f"FAIL: the {error['section']} section stopped: {error['message']}"
    if not bundle["host"]["run_check"]["passed"]:
        return False, "FAIL: mindspore.run_check() did not pass on this device (its output is in the bundle)"
    target = bundle["device"]["target"]
    problems, unchecked = [], []
    for result in bundle.get("correctness", {}).get("results", []):
        label = f"{result['method']} {result['variant']}".strip()
        if result["passed"] is None:
            unchecked.append(result["method"])
        elif not result["passed"]:
            problems.append(f"{label} ({result['mode']}): max relative error {result['worst']:.1e} > "
                            f"{result['rtol']:.0e} at {result['where']}")
    if problems:
        return False, f"FAIL: on {target} the update differs from the reference: {'; '.join(problems)}"
    parts = []
    if "correctness" in bundle:
        checked = [name for name in registry.names("optimizers") if any(r["method"] == name and r["passed"]
                                                   for r in bundle["correctness"]["results"])]
        parts.append(f"{', '.join(checked)} give the authors' update in graph and PyNative mode on {target}")
        if unchecked:
            parts.append(f"{', '.join(dict.fromkeys(unchecked))} not checked (no reference)")
    estimates = bundle.get("speed", {}).get("estimates", {})
    if "paper" in estimates:
        paper = estimates["paper"]
        parts.append(f"the paper's protocol would take {format_duration(paper['one_device_s'])} on one {target} "
                     f"({format_duration(paper['side_by_side_s'])} with one device per run)")
    if "quick" in estimates:
        parts.append(f"the quick run {format_duration(estimates['quick']['one_device_s'])}")
    return True, "PASS: " + ("; ".join(parts) if parts else f"{target} works")


def _finish(bundle, started):
    bundle["seconds"] = time.time() - started
    bundle["passed"], bundle["verdict"] = verdict(bundle)
    return bundle


def markdown(bundle):
    """The bundle as a markdown report, for an issue."""
    from .correctness import format_result

    asked = f"Requested device: {bundle['requested_device']}; sections: {', '.join(bundle['sections'])}"
    lines = ["# imbsam host check", "", f"**{bundle['verdict']}**", "", f"{asked}; took {bundle['seconds']:.0f} s.",
             "", "## Host", ""]
    if "device" in bundle:
        lines += [f"- {line}" for line in _host_lines(bundle)]
    else:
        cpu = bundle["host"]["cpu"]
        lines.append(f"- CPU: {cpu['model']}, {cpu['cores']} cores; MindSpore {bundle['host']['mindspore']}")
    if "correctness" in bundle:
        rtol, atol = bundle["correctness"]["tolerances"]
        how = ("3 steps of SGD with momentum 0.9 under each method on imbsam.reference's network (3x3 convolution, "
               "BatchNorm, ReLU, average pool, linear), float32 on the device against float64 NumPy; weights, "
               "BatchNorm running statistics and losses after every step; passes where "
               f"|device - reference| <= {atol:.0e} + {rtol:.0e} |reference|.")
        lines += ["", "## Correctness", "", how, "", "```"]
        lines += [format_result(result).strip() for result in bundle["correctness"]["results"]]
        lines.append("```")
    if "speed" in bundle:
        lines += _speed_markdown(bundle["speed"], bundle["device"]["target"])
    if "error" in bundle:
        lines += ["", "## Error", "", f"In the {bundle['error']['section']} section: {bundle['error']['message']}"]
        if bundle["error"].get("traceback"):
            lines += ["", "```", bundle["error"]["traceback"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _speed_markdown(speed, target):
    from tabulate import tabulate

    how = (f"Graph mode, batch 64 (the test pass: batches of 500, eval mode), {speed['steps']} timed steps per row "
           "after 2 warm-up steps, each row in its own process, one at a time; memory is that process's peak.")
    lines = ["", "## Speed", "", how, ""]
    for arch, figures in speed["figures"].items():
        table = [[name, row["img_per_s"], row["ms_per_step"], row["compile_s"], _memory(row)]
                 for name, row in figures["rows"].items()]
        config = figures["config"]
        lines += [f"{arch} ({config['parameters'] / 1e6:.2f} M parameters, {' and '.join(config['kernels'])} kernels):",
                  "",
                  tabulate(table, ["", "img/s", "ms/step", "compile s", "peak memory"], tablefmt="github",
                           floatfmt=("", ".1f", ".1f", ".1f", "")), ""]
    for name, estimate in speed["estimates"].items():
        runs = ", ".join(f"{method} {format_duration(seconds)}" for method, seconds in estimate["runs"].items())
        lines.append(f"- {'The paper' if name == 'paper' else 'The quick run'} (`{estimate['command']}`: "
                     f"{estimate['arch']}, {estimate['epochs']} epochs, {estimate['seeds']} seed): {runs}; "
                     f"{format_duration(estimate['one_device_s'])} one run after another on one {target}, "
                     f"{format_duration(estimate['side_by_side_s'])} with one device per run. Estimated from the rows "
                     "above: training steps and per-epoch test passes, not data preparation.")
    return lines


def write_bundle(bundle, out):
    os.makedirs(out, exist_ok=True)
    paths = os.path.join(out, "host-check.md"), os.path.join(out, "host-check.json")
    with open(paths[0], "w") as report:
        report.write(markdown(bundle))
    with open(paths[1], "w") as data:
        json.dump(bundle, data, indent=2)
    return paths


def main(argv=None):
    args = parse_args(argv)
    bundle = run(args)
    paths = write_bundle(bundle, args.out)
    print(f"\n{bundle['verdict']}\nbundle: {paths[0]} and {paths[1]} (hardware and software versions only)")
    return 0 if bundle["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
