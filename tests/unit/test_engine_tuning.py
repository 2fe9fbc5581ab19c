"""Tuning steps: the definition sagemaker's TuningStep emits (tests/unit/definitions/tuning.json,
built with HyperparameterTuner over a ModelTrainer), run by the local engine on a tiny objective.

The objective script has a known optimum (x=7, lr=0.01, kind=b, loss = offset), so what the
search finds can be checked against it. The definition is copied and adjusted per test.
"""

import copy
import json
import tarfile
import textwrap

import pytest

from mlops_local.engine import run
from tests.helpers import load, stage

OBJECTIVE = '''
import argparse, csv, json, math, os, sys, time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("-x", type=int, required=True)  # one-letter names arrive as -x
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--kind", required=True)
parser.add_argument("--offset", type=float, required=True)
parser.add_argument("--fail_kind", required=True)
parser.add_argument("--barrier_dir", default="")
parser.add_argument("--barrier_total", type=int, default=0)
args = parser.parse_args()
name = os.environ["TRAINING_JOB_NAME"]
if args.fail_kind in (args.kind, "all"):
    Path(os.environ["SM_OUTPUT_FAILURE"]).write_text(f"kind {args.kind} refused")
    sys.exit(1)
peak = 1
if args.barrier_dir:  # hold until another trial runs alongside (or no other is left to start)
    barrier = Path(args.barrier_dir)
    (barrier / f"{name}.started").touch()
    deadline = time.monotonic() + 20
    while True:
        started = {p.stem for p in barrier.glob("*.started")}
        active = len(started - {p.stem for p in barrier.glob("*.done")})
        peak = max(peak, active)
        if active >= 2 or len(started) == args.barrier_total:
            break
        if time.monotonic() > deadline:
            sys.exit("no other trial ran alongside " + name)
        time.sleep(0.01)
with open(Path(os.environ["SM_CHANNEL_TRAIN"]) / "abalone.csv") as handle:
    rows = sum(1 for _ in csv.DictReader(handle))
loss = ((args.x - 7) ** 2 / 10 + (math.log10(args.lr) + 2) ** 2
        + {"a": 1.0, "b": 0.0, "c": 0.5}[args.kind] + args.offset)
model = {"job": name, "x": args.x, "lr": args.lr, "kind": args.kind, "loss": loss,
         "rows": rows, "peak": peak}
(Path(os.environ["SM_MODEL_DIR"]) / "model.json").write_text(json.dumps(model))
print(f"epoch 1 loss={loss + 5}")
print(f"epoch 2 loss={loss}")
if args.barrier_dir:
    (Path(args.barrier_dir) / f"{name}.done").touch()
'''

REPORT_BEST = '''
import json, os, tarfile
from pathlib import Path

opt_ml = Path(os.environ.get("MLOPS_OPT_ML", "/opt/ml"))
with tarfile.open(opt_ml / "processing/model/model.tar.gz") as archive:
    model = json.load(archive.extractfile("model.json"))
(opt_ml / "processing/report/best.json").write_text(json.dumps(model))
'''


@pytest.fixture
def state(tmp_path):
    store = stage(tmp_path)
    code = tmp_path / "code"
    code.mkdir()
    (code / "objective.py").write_text(textwrap.dedent(OBJECTIVE))
    with tarfile.open(tmp_path / "sourcedir.tar.gz", "w:gz") as archive:
        archive.add(code / "objective.py", arcname="objective.py")
    store.put_file(tmp_path / "sourcedir.tar.gz", "s3://test/code/tuning/sourcedir.tar.gz")
    (tmp_path / "report_best.py").write_text(textwrap.dedent(REPORT_BEST))
    store.put_file(tmp_path / "report_best.py", "s3://test/code/tuning/report_best.py")
    return tmp_path


def definition(jobs=6, parallel=2, objective_type="Minimize", **static) -> dict:
    pipeline = copy.deepcopy(load("tuning"))
    arguments = pipeline["Steps"][0]["Arguments"]
    config = arguments["HyperParameterTuningJobConfig"]
    config["ResourceLimits"] = {"MaxNumberOfTrainingJobs": jobs,
                                "MaxParallelTrainingJobs": parallel}
    config["HyperParameterTuningJobObjective"]["Type"] = objective_type
    arguments["TrainingJobDefinition"]["StaticHyperParameters"].update(static)
    return pipeline


def tune(state, pipeline: dict, **parameters) -> tuple[dict, dict]:
    execution = run(pipeline, parameters, pipeline_name="tune", state=state)
    step = next(s for s in execution["Steps"] if s["StepName"] == "Tune")
    return execution, step


def trials(step: dict) -> list[dict]:
    """The tuned hyperparameters in launch order (trial names end in -NNN-<hex>)."""
    summaries = step["Properties"]["TrainingJobSummaries"]
    ordered = sorted(summaries, key=lambda s: s["TrainingJobName"].rsplit("-", 2)[1])
    return [s["TunedHyperParameters"] for s in ordered]


def objective(summary: dict) -> float:
    return summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]


def model(state, uri: str) -> dict:
    with tarfile.open(state / "s3" / uri.removeprefix("s3://")) as archive:
        return json.load(archive.extractfile("model.json"))


def test_random_search_is_reproducible_and_reports_the_best_first(state):
    execution, first = tune(state, definition(), Seed=5)
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    uncached = definition()
    uncached["Steps"][0]["CacheConfig"]["Enabled"] = False
    _, second = tune(state, uncached, Seed=5)
    _, other = tune(state, definition(), Seed=6)
    assert "CacheHitResult" not in second
    assert trials(second) == trials(first)
    assert trials(other) != trials(first)
    properties = first["Properties"]
    summaries = properties["TrainingJobSummaries"]
    assert len(summaries) == 6 and properties["TrainingJobStatusCounters"]["Completed"] == 6
    values = [objective(s) for s in summaries]
    assert values == sorted(values)
    best = properties["BestTrainingJob"]
    assert best == summaries[0] and best["TrainingJobStatus"] == "Completed"
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "validation:loss"
    again = second["Properties"]["BestTrainingJob"]
    assert (objective(again), again["TunedHyperParameters"]) == (
        objective(best), best["TunedHyperParameters"])
    for summary in summaries:  # the log's last loss= line, for the sampled values
        tuned = summary["TunedHyperParameters"]
        assert set(tuned) == {"x", "lr", "kind"} and 0 <= int(tuned["x"]) <= 10
        assert 1e-4 <= float(tuned["lr"]) <= 1.0 and tuned["kind"] in "abc"
        trained = model(state, f"s3://test/tuning/models/{summary['TrainingJobName']}"
                               "/output/model.tar.gz")
        assert objective(summary) == pytest.approx(trained["loss"])
        assert (str(trained["x"]), repr(trained["lr"]), trained["kind"]) == (
            tuned["x"], tuned["lr"], tuned["kind"])
        assert trained["rows"] > 4000


def test_top_model_uri_feeds_the_best_trials_model_to_the_next_step(state):
    execution, step = tune(state, definition(objective_type="Maximize"))
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    best = step["Properties"]["BestTrainingJob"]
    values = [objective(s) for s in step["Properties"]["TrainingJobSummaries"]]
    assert objective(best) == max(values) and values == sorted(values, reverse=True)
    report = json.loads((state / "s3/test/tuning/report/best.json").read_text())
    assert report["job"] == best["TrainingJobName"] and report["loss"] == objective(best)


def test_bayesian_search_closes_in_on_the_optimum(state):
    pipeline = definition(jobs=24, parallel=1)
    execution, step = tune(state, pipeline, Strategy="Bayesian", Seed=3)
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    summaries = step["Properties"]["TrainingJobSummaries"]
    by_launch = sorted(summaries, key=lambda s: s["TrainingJobName"].rsplit("-", 2)[1])
    losses = [objective(s) - 0.5 for s in by_launch]  # 0 at the optimum
    startup, guided = sorted(losses[:10]), sorted(losses[-10:])  # TPE starts with 10 random
    assert guided[5] < startup[5] / 2  # the guided trials' median beats the random ones'
    best = step["Properties"]["BestTrainingJob"]["TunedHyperParameters"]
    assert abs(int(best["x"]) - 7) <= 2 and 0.001 <= float(best["lr"]) <= 0.1
    assert objective(step["Properties"]["BestTrainingJob"]) - 0.5 < 1.0


def test_parallel_bayesian_search_is_reproducible_with_its_seed(state):
    """Two trials at a time finish in either order; the same seed still gives the same search
    (TPE's first 10 suggestions are random, the 4 after them learn from the results)."""
    first_pipeline, second_pipeline = definition(jobs=14), definition(jobs=14)
    second_pipeline["Steps"][0]["CacheConfig"]["Enabled"] = False
    _, first = tune(state, first_pipeline, Strategy="Bayesian", Seed=11)
    _, second = tune(state, second_pipeline, Strategy="Bayesian", Seed=11)
    assert "CacheHitResult" not in second
    assert trials(second) == trials(first)


def test_grid_runs_every_category(state):
    pipeline = definition(x="7", lr="0.01")
    ranges = pipeline["Steps"][0]["Arguments"]["HyperParameterTuningJobConfig"]
    ranges["ParameterRanges"] = {"CategoricalParameterRanges": [
        {"Name": "kind", "Values": ["a", "b", "c"]}]}
    execution, step = tune(state, pipeline, Strategy="Grid")
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    summaries = step["Properties"]["TrainingJobSummaries"]
    assert [s["TunedHyperParameters"]["kind"] for s in summaries] == ["b", "c", "a"]


def test_grid_refuses_numeric_ranges(state):
    execution, step = tune(state, definition(), Strategy="Grid")
    assert step["StepStatus"] == "Failed"
    assert "Grid strategy takes only categorical ranges; x, lr" in step["FailureReason"]


def test_a_failing_trial_is_reported_and_the_rest_compared(state):
    execution, step = tune(state, definition(jobs=8), Seed=5, FailKind="a")
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    summaries = step["Properties"]["TrainingJobSummaries"]
    failed = [s for s in summaries if s["TrainingJobStatus"] == "Failed"]
    completed = [s for s in summaries if s["TrainingJobStatus"] == "Completed"]
    assert failed and completed
    assert {s["TunedHyperParameters"]["kind"] for s in failed} == {"a"}
    assert all(s["FailureReason"].startswith("kind a refused") for s in failed)
    assert all(s["ObjectiveStatus"] == "Failed" for s in failed)
    assert summaries[:len(completed)] == completed  # scored trials first, best first
    counters = step["Properties"]["TrainingJobStatusCounters"]
    assert (counters["Completed"], counters["NonRetryableError"]) == (len(completed), len(failed))
    assert step["Outputs"] == [f"s3://test/tuning/models/{s['TrainingJobName']}/output/model.tar.gz"
                               for s in completed]


def test_every_trial_failing_fails_the_step_with_the_reasons(state):
    execution, step = tune(state, definition(jobs=3), FailKind="all")
    assert execution["PipelineExecutionStatus"] == "Failed"
    assert step["StepStatus"] == "Failed"
    reason = step["FailureReason"]
    assert reason.startswith("all 3 training jobs of the tuning job failed")
    assert reason.count("refused") == 3
    inspect = next(s for s in execution["Steps"] if s["StepName"] == "InspectBest")
    assert inspect["StepStatus"] == "Skipped"


def test_trials_run_in_parallel_up_to_the_limit(state, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    pipeline = definition(jobs=6, parallel=2, barrier_dir=str(barrier), barrier_total="6")
    execution, step = tune(state, pipeline)
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    summaries = step["Properties"]["TrainingJobSummaries"]
    uris = [f"s3://test/tuning/models/{s['TrainingJobName']}/output/model.tar.gz"
            for s in summaries]
    assert max(model(state, uri)["peak"] for uri in uris) == 2  # two ran side by side
    events = sorted([(s["TrainingStartTime"], 1) for s in summaries]
                    + [(s["TrainingEndTime"], -1) for s in summaries])
    running = [sum(change for _, change in events[:i + 1]) for i in range(len(events))]
    assert max(running) == 2  # and never more, by the engine's own start and end times


def test_rerun_hits_the_cache_and_new_code_misses_it(state):
    first_execution, first = tune(state, definition(), Seed=5)
    _, second = tune(state, definition(), Seed=5)
    assert second["CacheHitResult"]["SourceExecutionId"] == first_execution["ExecutionId"]
    assert second["Properties"]["TrainingJobSummaries"] == \
        first["Properties"]["TrainingJobSummaries"]
    report = json.loads((state / "s3/test/tuning/report/best.json").read_text())
    assert report["job"] == second["Properties"]["BestTrainingJob"]["TrainingJobName"]
    moved = definition()  # output locations are not cache key attributes, as in SageMaker
    output = moved["Steps"][0]["Arguments"]["TrainingJobDefinition"]["OutputDataConfig"]
    output["S3OutputPath"] = "s3://test/elsewhere"
    _, fourth = tune(state, moved, Seed=5)
    assert fourth["CacheHitResult"]["SourceExecutionId"] == first_execution["ExecutionId"]
    source = state / "s3/test/code/tuning/sourcedir.tar.gz"
    source.write_bytes(source.read_bytes() + b"\0" * 1024)  # same code URI, new content
    _, third = tune(state, definition(), Seed=5)
    assert "CacheHitResult" not in third


def test_unsupported_strategy_and_bad_ranges_name_the_problem(state):
    pipeline = definition()
    config = pipeline["Steps"][0]["Arguments"]["HyperParameterTuningJobConfig"]
    config["Strategy"] = "Hyperband"
    _, step = tune(state, pipeline)
    assert "tuning strategy 'Hyperband' is not supported" in step["FailureReason"]
    pipeline = definition()
    ranges = pipeline["Steps"][0]["Arguments"]["HyperParameterTuningJobConfig"]["ParameterRanges"]
    ranges["ContinuousParameterRanges"][0]["MinValue"] = "0"
    _, step = tune(state, pipeline)
    assert step["FailureReason"] == ("the tuning job's parameter ranges are invalid: "
                                     "lr: Logarithmic scaling needs a minimum above 0")


def test_no_trial_logging_the_objective_names_the_metric_its_regex_and_a_log(state):
    """Trials that run but never print what the regex looks for (a changed log line) fail the
    step with the metric and the regex, not as if the jobs had crashed."""
    pipeline = definition(jobs=2)
    training = pipeline["Steps"][0]["Arguments"]["TrainingJobDefinition"]
    training["AlgorithmSpecification"]["MetricDefinitions"][0]["Regex"] = "val_loss=([0-9.]+)"
    execution, step = tune(state, pipeline)
    assert execution["PipelineExecutionStatus"] == "Failed"
    reason = step["FailureReason"]
    assert reason.startswith("no trial logged the objective metric validation:loss "
                             "(regex 'val_loss=([0-9.]+)'); see ")
    log = reason.rsplit("see ", 1)[1]
    assert "epoch 2 loss=" in open(log).read()
