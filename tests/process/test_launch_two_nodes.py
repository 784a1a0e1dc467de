"""Two nodes on one machine: two torchrun agents meet through c10d rendezvous on 127.0.0.1, one
trainer process each, train on shards streamed through a `pipe:` command, end with identical weights,
and resume. Plus DDP's communication options on a real two-process gloo group.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import torch

from helpers.common import CLASSES, ROOT, TRAIN_PER_CLASS

BATCH = 8
STEPS_PER_EPOCH = CLASSES * TRAIN_PER_CLASS // BATCH
MODEL = "torchvision:squeezenet1_1"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_agents(*args: str, timeout: float = 240) -> str:
    """Start two torchrun agents as two nodes of one job (a node rank is not needed with c10d);
    return their combined output once both have exited successfully."""
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", f"--rdzv-id={uuid.uuid4().hex}",
            *args]
    procs = [subprocess.Popen(node, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"agent {i} exited {p.returncode}\n{out[-6000:]}"
    return "\n".join(outs)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_digest(path: Path) -> tuple[dict, int]:
    from trainer.config import ModelConfig
    from trainer.dist import weights_digest
    from trainer.model import build_model

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(name=MODEL), CLASSES)
    model.load_state_dict(state["model"])
    return state, weights_digest(model)


def test_two_nodes_train_to_identical_weights_and_resume(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    trainer = ["-m", "trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"),
               f"data.root=pipe:cat {shards}", f"run.dir={run_dir}", f"train.batch_size={BATCH}",
               "data.workers=1", "data.shuffle_buffer=16", "wandb.mode=disabled",
               # the mechanics under test do not need AlexNet: a small model keeps the test fast
               f"model.name={MODEL}", "data.image_size=64", "data.eval_resize=72"]

    two_agents(*trainer, "train.epochs=1")
    rows = metrics(run_dir)
    state, digest = checkpoint_digest(run_dir / "checkpoints" / f"step-{STEPS_PER_EPOCH:09d}.pt")
    assert state["data"]["world_size"] == 2, "the two agents did not form one job of two processes"
    assert [r["train/epoch_batches"] for r in rows if "train/epoch_batches" in r] == [STEPS_PER_EPOCH]
    # Every rank hashed its weights at the epoch end and they agreed (a mismatch stops the run); the
    # agreed hash is the hash of the weights rank 0 saved.
    assert [(r["step"], r["ddp/weights_digest"]) for r in rows if "ddp/weights_digest" in r] == [
        (STEPS_PER_EPOCH, digest)]

    # The same two-node command with one more epoch resumes; the second epoch also sends the
    # gradients bf16-compressed.
    out = two_agents(*trainer, "train.epochs=2", "ddp.grad_compression=bf16")
    assert f"resumed from {run_dir / 'checkpoints' / f'step-{STEPS_PER_EPOCH:09d}.pt'}" in out
    after = metrics(run_dir)[len(rows):]
    train = [r for r in after if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(STEPS_PER_EPOCH + 2, 2 * STEPS_PER_EPOCH + 1, 2))
    assert all(math.isfinite(r["train/loss"]) for r in train)
    state, digest = checkpoint_digest(run_dir / "checkpoints" / f"step-{2 * STEPS_PER_EPOCH:09d}.pt")
    assert (state["step"], state["epoch"], state["data"]["world_size"]) == (2 * STEPS_PER_EPOCH, 2, 2)
    assert [(r["step"], r["ddp/weights_digest"]) for r in after if "ddp/weights_digest" in r] == [
        (2 * STEPS_PER_EPOCH, digest)]


DDP_SCRIPT = r'''
import json, sys
import torch
from torch.nn import functional as F
from trainer import dist
from trainer.config import DDPConfig

info = dist.setup("cpu", 1)
result = {}
for compression in ("none", "bf16"):
    torch.manual_seed(0)  # the same initial weights on both ranks
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    start = dist.weights_digest(model)
    ddp = dist.wrap(model, info, DDPConfig(bucket_cap_mb=0.004, grad_compression=compression))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(info.rank)  # each rank its own batches
    losses, bf16_exact = [], []
    for _ in range(4):
        x, y = torch.randn(16, 32, generator=data), torch.randint(0, 4, (16,), generator=data)
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        bf16_exact.append(all(torch.equal(p.grad, p.grad.bfloat16().float()) for p in model.parameters()))
        opt.step()
        losses.append(loss.item())
    result[compression] = {"start": start, "end": dist.check_weights_agree(model, info),
                           "losses": losses, "bf16_exact": bf16_exact}
with torch.no_grad():  # one rank drifts by a hair
    model[0].weight[0, 0] += 1e-6 * (info.rank == 1)
try:
    dist.check_weights_agree(model, info)
    result["drift"] = None
except RuntimeError as e:
    result["drift"] = str(e)
with open(f"{sys.argv[1]}/rank{info.rank}.json", "w") as f:
    json.dump(result, f)
dist.teardown(info)
'''


def test_ddp_bf16_compression_trains_and_weight_check_catches_drift(tmp_path: Path):
    script = tmp_path / "ddp_options.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env={**ENV, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for mode in ("none", "bf16"):
        a, b = ranks[0][mode], ranks[1][mode]
        assert all(math.isfinite(v) for v in a["losses"] + b["losses"])
        assert a["losses"] != b["losses"], "the ranks should have seen different batches"
        assert a["end"] == b["end"] != a["start"], "weights must move, and identically on both ranks"
    # The hook is really in place: averaged gradients are bf16 values with it, and not without it.
    assert all(ranks[0]["bf16"]["bf16_exact"]) and all(ranks[1]["bf16"]["bf16_exact"])
    assert not any(ranks[0]["none"]["bf16_exact"])
    # A change of 1e-6 in one weight on rank 1 is caught, on both ranks, naming rank 1.
    for r in ranks:
        assert r["drift"] and "ranks [1] do not match rank 0" in r["drift"]
