"""Job specs: every bad input fails on the driver with the file and key named, before Ray starts."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.driver import cli
from cluster.config import JobConfigError, model_config_class
from cluster.driver.jobs import apply_overrides, load_job
from cluster.driver.prepare import prepare, read_manifest, shard_lists
from sashimi.config import SaShiMiConfig
from sashimi.digit_classifier import DigitClassifierConfig
from cluster_helpers import REPO, tiny_job, write_job




@pytest.mark.parametrize("path", sorted(p.name for p in (REPO / "jobs").glob("*.yaml") if p.name != "runtime_env.yaml"))
def test_shipped_jobs_validate(path):
    job = load_job(REPO / "jobs" / path)
    assert type(job.model) is model_config_class(job.task, job.model.to_dict())  # the task's model config
    assert job.name == path.removesuffix(".yaml")


def test_paper_configs_match_the_paper():
    for name, lr, crop, quant in [("youtube-mix-8l", 4e-3, 128000, "mu-law"), ("beethoven-8l", 4e-3, 128000, "linear"),
                                  ("sc09-8l", 1e-3, 16000, "mu-law")]:
        job = load_job(REPO / "jobs" / f"{name}.yaml")
        assert job.model.l_max == crop  # defaulted from data.crop: the DPLR kernel length
        assert job.model == SaShiMiConfig(d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, d_state=64,
                                          dropout=0.0, kernel="dplr", l_max=crop)
        assert (job.optim.lr, job.optim.weight_decay, job.optim.ssm_lr) == (lr, 0.0, 1e-3)
        assert (job.schedule.kind, job.schedule.factor) == ("plateau", 0.2)
        assert (job.data.crop, job.data.quantization) == (crop, quant)
    sc09 = load_job(REPO / "jobs" / "sc09-8l.yaml")
    assert sc09.scaling.num_workers * sc09.training.batch_per_worker * sc09.training.grad_accum == 32


def test_runtime_env_excludes_local_state():
    env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert set(env) <= {"working_dir", "excludes", "pip", "env_vars"}
    for d in (".venv/", "runs/", "data/"):
        assert d in env["excludes"]
    assert all(isinstance(v, str) for v in env["env_vars"].values())


def test_overrides_parse_values_as_yaml(tmp_path):
    path = write_job(tmp_path / "j.yaml", tiny_job(tmp_path, tmp_path))
    job = load_job(path, ["training.max_steps=200", "scaling.num_workers=2", "training.clip_norm=null",
                          "model.pool=[2, 2]", "data.quantization=linear", "optim.lr=1e-3"])
    assert job.training.max_steps == 200 and job.scaling.num_workers == 2
    assert job.training.clip_norm is None and job.model.pool == (2, 2)
    assert job.data.quantization == "linear" and job.optim.lr == pytest.approx(1e-3)


def test_override_does_not_mutate_input():
    raw = {"training": {"max_steps": 1}}
    out = apply_overrides(raw, ["training.max_steps=5", "eval.every=3"], "x")
    assert raw == {"training": {"max_steps": 1}} and out["training"]["max_steps"] == 5 and out["eval"]["every"] == 3


BAD = [
    ("unknown key", {"training": {"max_stepz": 3}}, "training.max_stepz"),
    ("unknown top-level key", {"trainng": {}}, "trainng"),
    ("wrong type", {"training": {"max_steps": "many"}}, "training.max_steps"),
    ("bool is not int", {"training": {"batch_per_worker": True}}, "training.batch_per_worker"),
    ("zero workers", {"scaling": {"num_workers": 0}}, "scaling.num_workers"),
    ("bad enum", {"data": {"quantization": "mulaw"}}, "data.quantization"),
    ("bad precision", {"training": {"precision": "fp8"}}, "training.precision"),
    ("compile not a bool", {"training": {"compile": "yes"}}, "training.compile"),
    ("tf32 not a bool", {"training": {"tf32": 1}}, "training.tf32"),
    ("unknown model key", {"model": {"d_modle": 3}}, "d_modle"),
    ("section not a mapping", {"optim": 3}, "optim"),
    ("gpu resource without use_gpu", {"scaling": {"resources_per_worker": {"CPU": 1, "GPU": 1}}},
     "scaling.resources_per_worker"),
]


@pytest.mark.parametrize("what,patch,key", BAD, ids=[b[0] for b in BAD])
def test_bad_job_names_key_and_file(tmp_path, what, patch, key, no_ray, capsys):
    job = tiny_job(tmp_path / "shards", tmp_path / "runs")
    for section, values in patch.items():
        if isinstance(values, dict) and isinstance(job.get(section), dict):
            job[section] = {**job[section], **values}
        else:
            job[section] = values
    path = write_job(tmp_path / "bad.yaml", job)
    with pytest.raises(JobConfigError) as e:
        load_job(path)
    assert str(path) in str(e.value) and key in str(e.value)
    # the CLI turns it into exit code 2 and a one-line message, with no Ray started (no_ray)
    assert cli.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and key in err


def test_missing_name_is_reported(tmp_path, no_ray):
    job = tiny_job(tmp_path, tmp_path)
    del job["name"]
    path = write_job(tmp_path / "noname.yaml", job)
    with pytest.raises(JobConfigError, match=r"noname\.yaml.*name"):
        load_job(path)


def test_invalid_yaml_and_missing_file(tmp_path, no_ray):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(JobConfigError, match="broken.yaml"):
        load_job(p)
    with pytest.raises(JobConfigError, match="nope.yaml"):
        load_job(tmp_path / "nope.yaml")


def test_missing_shard_dir_fails_before_ray(tmp_path, no_ray, capsys):
    path = write_job(tmp_path / "j.yaml", tiny_job(tmp_path / "does-not-exist", tmp_path / "runs"))
    job = load_job(path)  # schema is fine; the data check happens in prepare(), still before Ray
    with pytest.raises(JobConfigError, match=r"data\.shards.*does-not-exist"):
        prepare(job, str(path))
    assert cli.main([str(path)]) == 2
    assert "data.shards" in capsys.readouterr().err


def test_override_error_names_override(tmp_path, no_ray):
    path = write_job(tmp_path / "j.yaml", tiny_job(tmp_path, tmp_path))
    with pytest.raises(JobConfigError, match=r"j\.yaml.*training\.max_steps"):
        load_job(path, ["training.max_steps=[1, 2]"])
    with pytest.raises(JobConfigError, match="key.path=value"):
        load_job(path, ["training.max_steps"])


def test_shard_lists_from_manifest(demo_shards, tmp_path):
    job = load_job(write_job(tmp_path / "j.yaml", tiny_job(demo_shards, tmp_path)))
    lists = shard_lists(job, read_manifest(job))
    assert lists["train"] and lists["val"]
    assert all(Path(p).is_file() and p.endswith(".tar") for p in lists["train"] + lists["val"])


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    from cluster_helpers import make_demo_shards

    return make_demo_shards(tmp_path_factory.mktemp("demo"))
