"""``python -m stellarexp.bench inference``: the cost of uncertainty (the paper's central claim).

For one batch of cutouts and ``N`` draws (100 by default), times

- **head**: one backbone pass, then ``N`` vectorised draws of the Bayes-by-Backprop head (what
  the packaged model and the head stage do);
- **full**: ``N`` complete passes of backbone + head, the cost of sampling the whole network.

``ratio = full / head`` (target >= 50 on the development machine: one CPU core) is what it
measures. ``means_agree`` is only a sanity check of the timed code, not a measurement: the
backbone is deterministic in eval mode, so both paths are ``N`` head draws on the same features
and their means may differ by Monte-Carlo error only; they agree when every difference is within
``agree_z`` standard errors (``std * sqrt(2 / N)``). ``false`` means the two paths do not compute
the same thing (a bug), not that sampling the whole network would give other predictions.

The network is the configured architecture (``model.arch=cpu`` by default, the head of
``stage=head``), randomly initialised: a pass costs the same whatever the weights. Images are
random noise with a star-like blob. The head path runs once untimed, then the best of ``--repeat``; the full path
(already ``N`` backbone passes) the best of ``--full-repeat``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from stellarexp.bench import new_parser, pin_one_core, register
from stellarexp.config import compose
from stellarexp.models.convit import build_convit
from stellarexp.models.image_module import HeadModule
from stellarexp.stages.image_common import plain

TARGET_RATIO = 50.0


def build_models(arch: str = "cpu", hidden=None, targets=("teff", "logg", "fe_h")):
    """A ConViT backbone of preset ``arch`` (``stellarexp/conf/model/convit.yaml``) and a Bayesian head."""
    cfg = compose("train", ["model=convit", f"model.arch={arch}", "stage=head"])
    backbone = build_convit(plain(cfg.model), list(targets)).eval()
    head = HeadModule(backbone.embed_dim, list(targets), n_train=1000,
                      hidden=list(hidden or cfg.stage.hidden)).eval()
    return backbone, head


def _best(fn, repeat: int):
    """Best wall-clock and best CPU seconds of ``repeat`` calls, and the last output.

    CPU seconds (this process, pinned to one core) are what a path costs whatever else the
    machine runs; the wall clock also counts waiting for the core on a shared machine.
    """
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def build_parser() -> argparse.ArgumentParser:
    """The options of ``inference`` (``python -m stellarexp.bench inference --help``)."""
    ap = new_parser("inference", bench_inference, """
        For one batch of random images (5 x 48 x 48 noise with a star-like blob) and N draws,
        times two paths of the configured ConViT (--arch, with the head of stage=head, randomly
        initialised: a pass costs the same whatever the weights):
          head: one backbone pass, then N vectorised draws of the Bayes-by-Backprop head (what
                the packaged model and the head stage do);
          full: N complete passes of backbone + head, the cost of sampling the whole network.
        ratio = full / head (target >= 50 on one CPU core) is what it measures.
        means_agree is a sanity check of the timed code, not a measurement: the backbone is
        deterministic in eval mode, so both predictive means are N head draws on the same
        features and must agree within --agree-z standard errors (std * sqrt(2 / N)); false
        means the two paths compute different things (a bug).

        JSON keys: head_only_s and full_network_s (best wall seconds), head_only_images_per_s,
        full_network_images_per_s, head_only_cpu_s, full_network_cpu_s, ratio (wall),
        ratio_cpu, meets_target (ratio >= 50), means_agree and max_mean_diff_z (the sanity
        check), arch, n_samples, batch, threads, cpu (the CPU pinned to, or null),
        load_avg_1min, targets.""",
                    "python -m stellarexp.bench inference --n 100 --batch 64 --arch cpu")
    ap.add_argument("--n", type=int, default=100, metavar="N",
                    help="draws: head samples on one backbone pass, and full passes of the "
                         "network (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=256, metavar="B",
                    help="images in the batch (default: %(default)s)")
    ap.add_argument("--arch", default="cpu",
                    help="ConViT preset, model.arch of stellarexp/conf/model/convit.yaml "
                         "(cpu or paper; default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, metavar="R",
                    help="timed runs of the head path after one untimed warm-up, the best kept "
                         "(default: %(default)s)")
    ap.add_argument("--full-repeat", type=int, default=1, metavar="R",
                    help="timed runs of the full path, the best kept; one run already repeats "
                         "the backbone N times (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, metavar="T",
                    help="torch threads; with 1 the process is also pinned to one CPU "
                         "(default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0,
                    help="torch seed of the weights, the images and the draws "
                         "(default: %(default)s)")
    ap.add_argument("--agree-z", type=float, default=5.0, metavar="Z",
                    help="sanity check means_agree: the two paths' means agree when every "
                         "difference is within Z standard errors, std * sqrt(2 / N) "
                         "(default: %(default)s)")
    return ap


@register("inference", parser=build_parser)
def bench_inference(argv: list[str]) -> dict:
    """Time of one backbone pass + N vectorised head draws vs N full network passes (default
    N=100), with a sanity check that both paths' predictive means agree.

    See the module docstring; options: ``python -m stellarexp.bench inference --help``
    (:func:`build_parser`).
    """
    args = build_parser().parse_args(argv)
    cpu = pin_one_core() if args.threads == 1 else None

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    backbone, head = build_models(args.arch)
    yy, xx = torch.meshgrid(torch.arange(48.0) - 23.5, torch.arange(48.0) - 23.5, indexing="ij")
    blob = torch.exp(-(xx ** 2 + yy ** 2) / (2 * 1.8 ** 2))
    images = torch.randn(args.batch, 5, 48, 48) * 0.1 + blob * torch.rand(args.batch, 5, 1, 1) * 5
    n = int(args.n)

    def head_only():
        feats = backbone.features(images)
        return head.head(feats.expand(n, *feats.shape))  # [N, B, T]

    def full_network():
        return torch.stack([head.head(backbone.features(images)) for _ in range(n)])

    with torch.no_grad():
        head_only()  # warm-up: first-call allocations of both paths' kernels
        t_head, c_head, s_head = _best(head_only, args.repeat)
        # N passes already repeat the backbone N times: one timed run is stable enough
        t_full, c_full, s_full = _best(full_network, args.full_repeat)
    m_head, m_full = s_head.mean(0), s_full.mean(0)
    std = torch.maximum(s_head.std(0), s_full.std(0)).clamp_min(1e-12)
    z = ((m_head - m_full).abs() / (std * (2.0 / n) ** 0.5)).max().item()
    ratio = t_full / t_head
    return {
        "bench": "inference", "arch": args.arch, "n_samples": n, "batch": args.batch,
        "threads": args.threads, "cpu": cpu, "load_avg_1min": round(os.getloadavg()[0], 2),
        "head_only_s": round(t_head, 4), "full_network_s": round(t_full, 3),
        "head_only_images_per_s": round(args.batch / t_head, 1),
        "full_network_images_per_s": round(args.batch / t_full, 2),
        "head_only_cpu_s": round(c_head, 4), "full_network_cpu_s": round(c_full, 3),
        "ratio": round(ratio, 1), "ratio_cpu": round(c_full / c_head, 1),
        "means_agree": bool(z <= args.agree_z), "max_mean_diff_z": round(z, 2),
        "targets": {"ratio": TARGET_RATIO}, "meets_target": bool(ratio >= TARGET_RATIO),
    }
