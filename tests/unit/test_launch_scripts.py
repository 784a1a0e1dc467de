"""The launch scripts and manifests: valid bash, and torchrun command lines that torchrun's own argument
parser accepts with the values each launcher promises; the trainer arguments load as a config.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from torch.distributed.run import get_args_parser

from trainer import config

from helpers.common import ROOT

LAUNCH = ROOT / "launch"
SCRIPTS = sorted([*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch")])


def dry_run(script: str, *args: str, **env: str) -> tuple[list[str], list[str]]:
    """The script's command under DRY_RUN=1, split at the torchrun module: (launcher prefix, torchrun argv)."""
    proc = subprocess.run(["bash", str(LAUNCH / script), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", **env}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    at = argv.index("torch.distributed.run")
    assert argv[at - 1] == "-m" and "python" in Path(argv[at - 2]).name
    return argv[: at - 2], argv[at + 1:]


def torchrun_args(argv: list[str]):
    args = get_args_parser().parse_args(argv)
    assert args.module and args.training_script == "trainer", "torchrun must start `-m trainer`"
    return args


def trainer_config(trainer_argv: list[str]) -> config.Config:
    """What `python -m trainer` would load from these arguments."""
    path = None
    if trainer_argv[:1] == ["--config"]:
        path, trainer_argv = ROOT / trainer_argv[1], trainer_argv[2:]
    return config.load(path, trainer_argv)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_launch_script_is_valid_bash(script: Path):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_single_node_runs_one_standalone_torchrun_with_overrides_passed_through():
    _, argv = dry_run("single_node.sh", "--config", "configs/smoke_cpu.yaml", "train.epochs=3", NPROC="2")
    args = torchrun_args(argv)
    assert (args.standalone, args.nnodes, args.nproc_per_node) == (True, "1", "2")
    cfg = trainer_config(args.training_script_args)
    assert (cfg.train.epochs, cfg.train.batch_size) == (3, 32)  # the override, and the smoke recipe's value


def test_single_node_counts_the_visible_gpus():
    # This machine has no GPU: one process; with CUDA hidden the count is the same everywhere.
    _, argv = dry_run("single_node.sh", CUDA_VISIBLE_DEVICES="")
    assert torchrun_args(argv).nproc_per_node == "1"


def test_slurm_runs_one_agent_per_node_with_c10d_rendezvous_on_the_first_node():
    env = dict(SLURM_JOB_ID="4242", SLURM_NNODES="4", SLURM_GPUS_ON_NODE="8", RDZV_HOST="gpu-node-017",
               SLURM_SUBMIT_DIR=str(ROOT), SLURM_JOB_NAME="alexnet")
    launcher, argv = dry_run("slurm.sbatch", "data.root=/shared/imagenet", **env)
    assert launcher[0] == "srun" and "--ntasks-per-node=1" in launcher
    args = torchrun_args(argv)
    assert (args.nnodes, args.nproc_per_node) == ("4", "8")
    assert (args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == ("c10d", "gpu-node-017:29500", "4242")
    assert "SIGUSR1" in args.signals_to_handle.split(",")  # forwarded to the trainers, not fatal to torchrun
    cfg = trainer_config(args.training_script_args)
    assert (cfg.run.dir, cfg.data.root) == ("runs/alexnet-4242", "/shared/imagenet")  # per job, kept on requeue

    header = (LAUNCH / "slurm.sbatch").read_text()
    assert re.search(r"^#SBATCH --requeue$", header, re.M)
    lead = int(re.search(r"^#SBATCH --signal=B:USR1@(\d+)$", header, re.M).group(1))
    assert args.shutdown_timeout < lead, "torchrun must not kill the trainers before they have saved"


def test_slurm_outside_a_job_says_to_use_sbatch():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(["bash", str(LAUNCH / "slurm.sbatch")], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode != 0 and "sbatch" in proc.stderr


def test_k8s_pytorchjob_is_elastic_restartable_and_mounts_shards_and_checkpoints(monkeypatch):
    (job,) = yaml.safe_load_all((LAUNCH / "k8s" / "pytorchjob.yaml").read_text())
    claims = {d["metadata"]["name"]: d for d in yaml.safe_load_all((LAUNCH / "k8s" / "volumes.yaml").read_text())}
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    spec, policy = job["spec"], job["spec"]["elasticPolicy"]
    worker = spec["pytorchReplicaSpecs"]["Worker"]
    assert policy["rdzvBackend"] == "c10d" and policy["maxRestarts"] > 0
    assert policy["minReplicas"] <= worker["replicas"] <= policy["maxReplicas"]
    assert worker["restartPolicy"] == "OnFailure"
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch"  # where the operator looks for the rendezvous port
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "pytorchjob-port"]

    # The operator hands torchrun its rendezvous as PET_* variables (training-operator elastic.go);
    # torchrun's parser reads them as defaults.
    operator_env = {
        "PET_RDZV_ENDPOINT": f"{job['metadata']['name']}-worker-0:{port}",
        "PET_RDZV_BACKEND": policy["rdzvBackend"],
        "PET_NNODES": f"{policy['minReplicas']}:{policy['maxReplicas']}",
        "PET_MAX_RESTARTS": str(policy["maxRestarts"]),
        "PET_NPROC_PER_NODE": spec["nprocPerNode"],
    }
    command = container["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"]
    for name, value in operator_env.items():
        monkeypatch.setenv(name, value)
    args = torchrun_args(command[3:])
    assert (args.nnodes, args.rdzv_backend, args.rdzv_endpoint) == ("2:2", "c10d", "alexnet-imagenet-worker-0:23456")
    assert (args.nproc_per_node, args.max_restarts) == ("8", 3)
    assert int(spec["nprocPerNode"]) == container["resources"]["limits"]["nvidia.com/gpu"]
    assert args.shutdown_timeout < pod["terminationGracePeriodSeconds"]

    # The trainer reads the shards volume and writes its run directory to the shared runs volume.
    cfg = trainer_config(args.training_script_args)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert cfg.data.root == mounts["shards"] and cfg.run.dir.startswith(mounts["runs"] + "/")
    for name, mode in (("shards", "ReadOnlyMany"), ("runs", "ReadWriteMany")):
        claim = volumes[name]["persistentVolumeClaim"]["claimName"]
        assert claims[claim]["spec"]["accessModes"] == [mode]
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and mounts["dshm"] == "/dev/shm"
