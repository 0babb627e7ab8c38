"""Checks that need a GPU: the same code on CUDA (fp32 equivalences, bf16 autocast training,
checkpoint round trip). Prints one line per check; exits non-zero on the first failure.

    python benchmarks/device_check.py --out /tmp/adaptok_check
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from adaptok.models import EncoderConfig, MaskedEncoder, ModelConfig, load_model, retrofit
from adaptok.train import TrainConfig, build_dataset, evaluate, train


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        raise SystemExit(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/adaptok_check")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only-resume", action="store_true", help="run check 4 only")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(
        torch.__version__,
        timm.__version__,
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    )

    if args.only_resume:
        return check_resume(args, device)
    # 1. Retrofit equivalence on CUDA (fp32).
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval().to(device)
    images = torch.randn(8, 3, 224, 224, device=device)
    for embedder, position in (("dht", "sincos"), ("patch", "learned")):
        model = retrofit(vit, "grid", embedder=embedder, position=position).eval()
        with torch.no_grad():
            diff = float((model(images) - vit(images)).abs().max())
        check(
            f"retrofit grid/{embedder} == timm on {device.type}",
            diff < 1e-4,
            f"max diff {diff:.2e}",
        )

    # 2. Masked attention == per-sample loop on CUDA, fp32 and bf16 autocast.
    encoder = MaskedEncoder(EncoderConfig(embed_dim=64, depth=2, num_heads=4)).to(device).eval()
    lengths = [7, 3, 12]
    x = torch.randn(3, 12, 64, device=device)
    valid = torch.arange(12, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    for dtype, tol in ((None, 1e-5), (torch.bfloat16, 3e-2)):
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            out = encoder(x, valid).float()
            alone = [encoder(x[b : b + 1, :n]).float() for b, n in enumerate(lengths)]
        diff = max(
            float((out[b, :n] - a[0]).abs().max())
            for b, (n, a) in enumerate(zip(lengths, alone, strict=True))
        )
        check(f"masked encoder == per-sample ({dtype or 'fp32'})", diff < tol, f"{diff:.2e}")

    # 3. Training on CUDA with bf16 autocast, every tokenizer, then eval from the checkpoint.
    for method, options in (
        ("grid", {"patch_size": 4}),
        ("quadtree", {"budget": 28, "min_patch": 4, "max_patch": 16}),
        ("dht", {"budget": 40}),
    ):
        model_config = ModelConfig(
            method=method,
            image_size=32,
            patch_size=4,
            embedder="dht",
            partition_options=options,
            encoder=EncoderConfig(embed_dim=64, depth=2, num_heads=2),
        )
        config = TrainConfig(
            dataset="shapes",
            output=f"{args.out}/{method}",
            steps=40,
            batch_size=32,
            lr=2e-3,
            warmup_steps=5,
            train_limit=512,
            eval_limit=128,
            checkpoint_every=20,
            progress=False,
            device=args.device,
        )
        tick = time.perf_counter()
        result = train(model_config, config)
        seconds = time.perf_counter() - tick
        ev = result.evaluation
        finite = all(torch.isfinite(torch.tensor(result.losses)).tolist())
        check(
            f"train {method} on {device.type} (autocast auto)",
            finite and result.losses[-1] < result.losses[0],
            f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, mIoU {ev.miou:.3f}, "
            f"{ev.tokens_per_image:.1f} tokens, {seconds:.1f} s",
        )
        model = load_model(result.checkpoint, device=device)
        dataset = build_dataset("shapes", split="test", image_size=32, limit=128)
        again = evaluate(model, dataset, batch_size=32, device=device)
        # CUDA's index_add_ (region sums) uses atomics: equal up to float rounding, not bitwise.
        gaps = [abs(getattr(again, k) - getattr(ev, k)) for k in ("loss", "accuracy", "miou")]
        check(
            f"eval {method} from checkpoint reproduces",
            max(gaps) < 2e-3 and again.tokens_per_image == ev.tokens_per_image,
            f"loss/acc/mIoU gaps {', '.join(f'{g:.1e}' for g in gaps)}",
        )
    return check_resume(args, device)


def check_resume(args: argparse.Namespace, device: torch.device) -> int:
    """4. Resume on the device: stop at step 5 (checkpoint at 4), resume to 10."""

    def run(name: str, **changes: object) -> list[float]:
        model_config = ModelConfig(
            method="dht",
            image_size=32,
            patch_size=4,
            partition_options={"budget": 40},
            encoder=EncoderConfig(embed_dim=64, depth=2, num_heads=2),
        )
        config = TrainConfig(
            dataset="shapes",
            output=f"{args.out}/{name}",
            steps=10,
            batch_size=16,
            train_limit=48,
            eval_limit=16,
            checkpoint_every=4,
            progress=False,
            device=args.device,
            **changes,
        )
        return train(model_config, config, resume=True).losses

    for amp in ("off", "auto"):
        straight = run(f"straight-{amp}", amp=amp)
        again = run(f"again-{amp}", amp=amp)
        run(f"resumed-{amp}", stop_after=5, amp=amp)
        resumed = run(f"resumed-{amp}", amp=amp)
        noise = max(abs(a - b) for a, b in zip(straight, again, strict=True))
        gap = max(abs(a - b) for a, b in zip(straight[4:], resumed, strict=True))
        # On CUDA, atomics (index_add_) make even two uninterrupted runs differ slightly and
        # dHT's discrete merges amplify that: a resume must not drift further than a rerun.
        exact = device.type == "cpu"
        check(
            f"resume on {device.type} (amp {amp}) continues the loss curve",
            gap == 0 if exact else gap <= max(3 * noise, 1e-4),
            f"max gap {gap:.1e}; two uninterrupted runs differ by {noise:.1e}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
