"""set_image against the reference, on a quiet machine and beside a CPU-bound neighbour.

sam2ui's thread policies, each measured in the same run as Meta's reference (same random
weights, same image, float32 and bfloat16):

- ``static``: torch's threads from the CPUs this process may use (affinity, cgroup quota): the
  default of the app and the command line;
- ``auto``: before each call, the CPUs other processes leave free (``--threads auto``);

and the reference with torch's default threads. The neighbour is one process spinning on one
CPU (``--neighbours`` of them), started after the quiet round.

    python benchmarks/bench_threads.py --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(ROOT / "tests" / "_stubs"))

from sam2.sam2_image_predictor import SAM2ImagePredictor as RefPredictor  # noqa: E402

from benchmarks.bench_image import interleaved, synthetic_image  # noqa: E402
from sam2ui.core.image.predictor import SAM2ImagePredictor  # noqa: E402
from sam2ui.core.serving.threads import FreeCpus, configure_threads, usable_cpus  # noqa: E402
from tests.reference_models import build_reference_model, save_meta_checkpoint  # noqa: E402

SPIN = "while True: pass"


def cases(variant: str, workdir: Path, image) -> dict:
    ref_model = build_reference_model(variant, seed=0)
    path = save_meta_checkpoint(ref_model.state_dict(), workdir / "weights.pt")
    ref32, ref16 = RefPredictor(ref_model), RefPredictor(ref_model)
    ours32 = SAM2ImagePredictor.from_pretrained(path, device="cpu", dtype=torch.float32)
    ours16 = SAM2ImagePredictor.from_pretrained(path, device="cpu", dtype=torch.float32)
    ours16.model.set_compute_dtype(torch.bfloat16)
    default_threads = torch.get_num_threads()
    static = usable_cpus()
    free = FreeCpus(window_s=0.5)

    def ref(pred, bf16: bool):
        def run() -> None:
            torch.set_num_threads(default_threads)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                pred.set_image(image)

        return run

    def ours(pred, policy: str):
        def run() -> None:
            if policy == "auto":
                free.apply()
            else:
                configure_threads(static)
            pred.set_image(image)

        return run

    return {
        "ref fp32": ref(ref32, False),
        "ref bf16": ref(ref16, True),
        "ours fp32 static": ours(ours32, "static"),
        "ours fp32 auto": ours(ours32, "auto"),
        "ours bf16 static": ours(ours16, "static"),
        "ours bf16 auto": ours(ours16, "auto"),
    }


def table(title: str, times: dict[str, list[float]]) -> list[str]:
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"### {title}", "", "| case | median ms | ratio to the reference |", "|---|---:|---:|"]
    for name, ms in med.items():
        ref = med["ref bf16" if "bf16" in name else "ref fp32"]
        lines.append(f"| {name} | {ms:.0f} | {ms / ref:.2f}x |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="sam2.1-hiera-tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--neighbours", type=int, default=1)
    parser.add_argument("--image-size", default="1080x1920")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.image_size.split("x"))
    image = synthetic_image(h, w)
    lines = [
        f"`{shlex.join(['python', 'benchmarks/bench_threads.py', *sys.argv[1:]])}`",
        f"({args.variant}, {w}x{h}, usable CPUs {usable_cpus()}, torch default threads "
        f"{torch.get_num_threads()})",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="sam2ui-bench-threads-") as tmp:
        run = cases(args.variant, Path(tmp), image)
        lines += table("quiet", interleaved(run, args.repeats))
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.neighbours)]
        try:
            time.sleep(1.0)  # let the neighbours show in /proc/stat
            busy = interleaved(run, args.repeats)
        finally:
            for p in spinners:
                p.kill()
        lines += table(f"beside {args.neighbours} CPU-bound neighbour(s)", busy)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
