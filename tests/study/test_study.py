"""The whole study: the demo at a small size (with an interruption), and the paper's dry run."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from embedkit.cli.app import main
from embedkit.study import load_study, plan, run_study

DEMO = """
seeds = [0, 1]
[data]
kind = "phantom"
out = "phantom"
per_group = 6
size = 32
bias = ["sex=F:0.6"]
[paths]
cache_dir = "cache"
runs_dir = "runs"
report_dir = "report"
[models]
clip-tiny = {}
medclip-rn50-tiny = {}
[methods]
zeroshot = {}
linear = { epochs = 10 }
mlp = { epochs = 5 }
knn = {}
lora = { epochs = 1, lrs = [1e-3], seeds = [0] }
full = { epochs = 2, lrs = [1e-3], seeds = [0] }
[report]
n_boot = 50
"""


def test_demo_study_end_to_end_with_interruption(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text(DEMO)
    # start the study and kill it once the first run has finished
    proc = subprocess.Popen([sys.executable, "-m", "embedkit", "study", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600  # generous for a busy machine: the loop leaves as soon as one run is finished
    while time.time() < deadline and proc.poll() is None and not list((tmp_path / "runs").glob("*/*/*/seed-*/run.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/*/*/seed-*/run.json")}
    assert finished, f"no run finished before the kill; the study's stderr: {proc.stderr.read().decode()[-2000:]}"
    study = load_study(config)
    steps = run_study(study)
    assert not [s for s in steps if s.error], [s.error for s in steps if s.error]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # no repeated work
    runs = sorted(str(p.relative_to(tmp_path / "runs").parent) for p in (tmp_path / "runs").glob("*/*/*/seed-*/run.json"))
    assert len(runs) == 2 * (2 + 2 + 2 + 1 + 1 + 1)  # 2 models x (zeroshot, linear, mlp: 2 seeds; knn, lora, full: 1)
    md = (tmp_path / "report/report.md").read_text()
    assert "Fairness gaps, sex" in md and len(list((tmp_path / "report/figures").glob("*.png"))) == 8  # + findings
    again = run_study(study)  # everything done: only the report is rebuilt
    assert [s.stage for s in again if not s.done] == ["report"]
    assert "finished" in (tmp_path / "runs/study.log").read_text()


def test_a_failing_step_is_recorded_and_the_rest_completes(tmp_path, capsys):
    config = tmp_path / "s.toml"
    config.write_text(DEMO.replace("medclip-rn50-tiny = {}", 'medclip-rn50-tiny = { weights = "missing.bin" }')
                      .replace("lora = { epochs = 1, lrs = [1e-3], seeds = [0] }\n", "").replace(
                          "full = { epochs = 2, lrs = [1e-3], seeds = [0] }\n", ""))
    assert main(["study", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "missing.bin" in out
    assert (tmp_path / "runs/phantom/clip-tiny/linear/seed-1/run.json").is_file()
    assert (tmp_path / "report/report.md").is_file()


def test_an_attribute_the_data_lacks_stops_the_study_once_before_extraction(tmp_path, capsys):
    config = tmp_path / "s.toml"
    config.write_text('attributes = ["sex", "race"]\n' + DEMO)
    assert main(["study", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("no column 'race' for --attributes") == 1 and str(tmp_path / "phantom/manifest.csv") in err
    assert (tmp_path / "phantom/manifest.csv").is_file() and not (tmp_path / "cache").exists()
    assert main(["study", "--config", str(config), "--dry-run"]) == 2      # the plan says it too, the data being there
    assert "no column 'race'" in capsys.readouterr().err


def test_a_runs_folder_of_another_kind_of_task_stops_the_study_before_any_step(tmp_path, capsys):
    config = tmp_path / "s.toml"
    config.write_text(DEMO)
    held = tmp_path / "runs/phantom/clip-tiny/linear/seed-0"
    held.mkdir(parents=True)
    (held / "run.json").write_text(json.dumps({"config": {"task": {"kind": "binary", "positive": "Edema"}}}))
    for dry in ([], ["--dry-run"]):
        assert main(["study", "--config", str(config), *dry]) == 2
        err = capsys.readouterr().err
        assert "holds binary (Edema) runs" in err and "a multiclass run beside them" in err
    assert not (tmp_path / "phantom").exists() and not (tmp_path / "cache").exists()


def test_paper_dry_run_on_generated_nih_metadata(tmp_path, capsys):
    meta = tmp_path / "Data_Entry_2017_v2020.csv"
    with meta.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position"])
        i = 0
        for label in ("Atelectasis", "Cardiomegaly", "Effusion"):
            for sex in "MF":
                for age in (30, 70):
                    for k in range(60):
                        w.writerow([f"{i:08d}_000.png", label, 0, f"{i // 2}", age + k % 20, sex, "PA"])
                        i += 1
    paper = Path(__file__).parents[2] / "studies/paper.toml"
    args = ["study", "--config", str(paper), "--dry-run", "--set", f"vars.metadata={meta}", "--set", f"vars.weights={tmp_path}/w",
            "--set", f"paths.runs_dir={tmp_path}/runs", "--set", f"paths.cache_dir={tmp_path}/cache",
            "--set", f"data.out={tmp_path}/runs/nih/manifest.csv"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "data" in out and "gloria / full" in out and "step(s) to run" in out
    assert "vit-imagenet / full" in out and "│ clip / full" not in out and "vit-imagenet / linear" not in out
    study = load_study(paper, args[5::2])
    steps = plan(study)
    # data, extract, 4 cache methods + 3 linear interventions per encoder, an audit per encoder, LoRA and full, report
    assert len(steps) == 1 + 1 + 5 * (4 + 3) + 5 + 5 * 2 + 1 and not any(s.done for s in steps)


def test_a_config_with_typos_is_refused_naming_each_key(tmp_path):
    import pytest

    from embedkit.errors import EmbedkitError

    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.replace("per_group = 6", "per_grup = 6").replace("clip-tiny = {}", "clip-tiyn = {}")
                   .replace("mlp = { epochs = 5 }", "mlp = { epoch = 5 }").replace("[report]", "[reprot]")
                   .replace("knn = {}", 'knn = { ks = "five" }'))
    with pytest.raises(EmbedkitError) as err:
        load_study(bad)
    msg = str(err.value)
    for needle in ("'data.per_grup' (did you mean 'per_group'?)", "'clip-tiyn' (did you mean 'clip-tiny'?)",
                   "'methods.mlp.epoch' (did you mean 'epochs'?)", "'reprot' (did you mean 'report'?)", "methods.knn.ks"):
        assert needle in msg, msg


SMALL = """
seeds = [0]
[data]
kind = "phantom"
out = "phantom"
per_group = 5
size = 16
[paths]
cache_dir = "cache"
runs_dir = "runs"
report_dir = "report"
[models]
clip-tiny = { weights = "w.bin" }
medclip-rn50-tiny = {}
[methods]
linear = { epochs = 3 }
knn = {}
lora = { epochs = 1, lrs = [1e-3] }
[report]
n_boot = 20
"""


def test_the_study_reruns_exactly_what_changed(tmp_path):
    from embedkit.models import get, load_encoder

    get("clip").save(load_encoder("clip-tiny", seed=0), tmp_path / "w.bin")
    config = tmp_path / "s.toml"
    config.write_text(SMALL)
    steps = run_study(load_study(config))
    assert not [s.error for s in steps if s.error]

    def status(overrides=()):
        return {(s.stage, s.name): (s.status, s.reason) for s in plan(load_study(config, list(overrides)))}

    now = status()  # nothing changed: nothing to run but the report
    assert [k for k, (st, _) in now.items() if st != "done"] == [("report", str(tmp_path / "report"))]
    changed = status(["methods.linear.epochs=2"])
    stale = {k: v for k, v in changed.items() if v[0] != "done" and k[0] != "report"}
    assert set(stale) == {("experiments", "clip-tiny / linear"), ("experiments", "medclip-rn50-tiny / linear")}
    assert all(v == ("stale", "config.head.epochs 3 → 2") for v in stale.values()), stale
    get("clip").save(load_encoder("clip-tiny", seed=1), tmp_path / "w.bin")  # new weights in the same file
    after = status()
    stale = {k for k, v in after.items() if v[0] != "done" and k[0] != "report"}
    assert stale == {("extract", "clip-tiny, medclip-rn50-tiny"), ("experiments", "clip-tiny / linear"),
                     ("experiments", "clip-tiny / knn"), ("finetune", "clip-tiny / lora")}
    assert "weights" in after[("extract", "clip-tiny, medclip-rn50-tiny")][1]
    assert after[("finetune", "clip-tiny / lora")] == ("stale", "weights changed")


def test_folds_plan_every_round_from_one_extraction(tmp_path):
    config = tmp_path / "cv.toml"
    config.write_text(SMALL.replace("seeds = [0]", "seeds = [0]\nfolds = 3").replace('clip-tiny = { weights = "w.bin" }\n', "")
                      .replace("lora = { epochs = 1, lrs = [1e-3] }\n", ""))
    study = load_study(config)
    steps = run_study(study)
    assert not [s.error for s in steps if s.error]
    names = [s.name for s in steps if s.stage == "experiments"]
    assert names == [f"medclip-rn50-tiny / {m} / phantom-fold{k}" for m in ("linear", "knn") for k in range(3)]
    assert len([s for s in steps if s.stage == "extract"]) == 1
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 1  # one cache serves every round
    md = (tmp_path / "report/report.md").read_text()
    assert "phantom (3-fold CV, pooled)" in md or "medclip-rn50-tiny" in md
    assert "Cross-validation: per-fold spread" in md and "pooled out-of-fold over 3 folds" in md
    # a fold missing: the report refuses to pool fewer images under a "3-fold" label
    import shutil

    shutil.rmtree(tmp_path / "runs/phantom-fold1/medclip-rn50-tiny/knn")
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "r2"), "--n-boot", "20"]) == 2
    assert not (tmp_path / "r2/report.md").exists()


def test_a_study_names_its_own_checkpoint_and_runs_interventions(tmp_path):
    """[models.NAME] family = "open_clip" loads a saved checkpoint under NAME; mitigate = [...] adds runs."""
    from embedkit.models import get, load_encoder

    get("open_clip").save(load_encoder("open_clip-tiny", seed=2), tmp_path / "mine")
    config = tmp_path / "own.toml"
    config.write_text(SMALL.replace('clip-tiny = { weights = "w.bin" }\nmedclip-rn50-tiny = {}',
                                    'my-clip = { family = "open_clip", weights = "mine" }')
                      .replace("linear = { epochs = 3 }", 'linear = { epochs = 3, mitigate = ["reweight", "offsets"] }')
                      .replace("lora = { epochs = 1, lrs = [1e-3] }\n", ""))
    study = load_study(config)
    names = [s.name for s in plan(study) if s.stage == "experiments"]
    assert names == ["my-clip / linear", "my-clip / linear+reweight-sex", "my-clip / linear+offsets-sex", "my-clip / knn"]
    assert not [s.error for s in run_study(study) if s.error]
    assert (tmp_path / "runs/phantom/my-clip/linear+offsets-sex/seed-0/run.json").is_file()
    assert "Interventions against ERM" in (tmp_path / "report/report.md").read_text()


def test_a_changed_phantom_is_stale_and_regenerated(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(SMALL)
    plan(load_study(config))[0].run()
    assert plan(load_study(config))[0].done
    config.write_text(SMALL.replace("size = 16", 'size = 16\nbias = ["site=C:0.5"]'))
    step = plan(load_study(config))[0]
    assert step.status == "stale" and "bias" in step.reason
    step.run()
    assert plan(load_study(config))[0].done
    assert "site" in (tmp_path / "phantom/manifest.csv").read_text().splitlines()[0]


def test_the_demo_studies_share_one_phantom():
    """demo-cv.toml reads demo.toml's phantom and stores: a different [data] would regenerate the phantom
    (a changed spec is stale) and make each study's runs stale in turn."""
    root = Path(__file__).parents[2] / "studies"
    main_demo, cv = load_study(root / "demo.toml"), load_study(root / "demo-cv.toml")
    assert main_demo.config.data.model_dump() == cv.config.data.model_dump() and main_demo.manifest == cv.manifest
    assert main_demo.attributes == cv.attributes
    multilabel, binary = load_study(root / "demo-multilabel.toml"), load_study(root / "demo-binary.toml")
    assert multilabel.config.data.model_dump() == binary.config.data.model_dump()        # one finding of that phantom
    assert len({s.paths["runs_dir"] for s in (main_demo, cv, multilabel, binary)}) == 4    # one task kind per folder
