"""The pipeline definition: its steps, their wiring, and how it is built (offline, repeatably)."""

from __future__ import annotations

import dataclasses
import json
import re
import tarfile

import pytest

from mlops_core import config as project_config
from mlops_core import targets
from mlops_local.store import LocalStore
from model_build import definition
from tests.helpers import offline, variant


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two builds of the local definition, each with every HTTP request from botocore refused."""
    config = project_config.load()
    store = LocalStore(tmp_path_factory.mktemp("store"))
    target = targets.local(config, store)
    with offline(tmp_path_factory):
        first, second = definition.build(config, target), definition.build(config, target)
    return config, target, store, first, second


@pytest.fixture(scope="module")
def steps(built):
    return _flat(built[3])


def test_build_is_offline_and_byte_identical(built):
    _, _, _, first, second = built
    assert first == second


def test_code_is_uploaded_to_the_store_by_content(built):
    config, target, store, text, _ = built
    uris = set(re.findall(rf's3://{target.bucket}/{config.project}/code/[0-9a-f]{{16}}[^"]*', text))
    assert uris, "no code URI in the definition"
    for uri in uris:
        assert store.exists(uri), uri


def test_steps_and_types(steps):
    assert {name: step["Type"] for name, step in steps.items()} == {
        "ValidateAndPreprocess": "Processing",
        "DataQualityBaseline": "Processing",
        "Train": "Training",
        "Evaluate": "Processing",
        "CheckMetric": "Condition",
        "RegisterModel": "RegisterModel",
        "MetricAboveThreshold": "Fail",
    }


def _gets(value) -> set[str]:
    return set(re.findall(r'"Get": "([^"]+)"', json.dumps(value)))


def test_property_references_connect_the_steps(steps):
    train_inputs = _gets(steps["Train"]["Arguments"]["InputDataConfig"])
    assert "Steps.ValidateAndPreprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri" \
        in train_inputs
    baseline_inputs = _gets(steps["DataQualityBaseline"]["Arguments"]["ProcessingInputs"])
    assert any(ref.startswith("Steps.ValidateAndPreprocess.") for ref in baseline_inputs)
    assert not any(ref.startswith("Steps.Train.") for ref in baseline_inputs), \
        "the baseline must run in parallel with training, not after it"
    evaluate_inputs = _gets(steps["Evaluate"]["Arguments"]["ProcessingInputs"])
    assert "Steps.Train.ModelArtifacts.S3ModelArtifacts" in evaluate_inputs
    condition = steps["CheckMetric"]["Arguments"]["Conditions"][0]
    assert condition["LeftValue"]["Std:JsonGet"]["PropertyFile"] == {
        "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"}
    assert condition["RightValue"] == {"Get": "Parameters.MetricThreshold"}
    register = steps["RegisterModel"]["Arguments"]
    container = register["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert "Steps.DataQualityBaseline.ProcessingOutputConfig.Outputs['baseline'].S3Output.S3Uri" \
        in _gets(register["DriftCheckBaselines"])
    assert "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri" \
        in _gets(register["ModelMetrics"]["ModelQuality"])


def test_parameters_have_defaults(built):
    config = built[0]
    parameters = {p["Name"]: p for p in json.loads(built[3])["Parameters"]}
    for name in ("InputDataUrl", "ProcessingInstanceType", "ProcessingInstanceCount",
                 "TrainingInstanceType", "MetricThreshold", "ModelApprovalStatus"):
        assert "DefaultValue" in parameters[name], name
    assert parameters["MetricThreshold"]["DefaultValue"] == config.threshold
    assert parameters["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    for hyperparameter, value in config.hyperparameters.items():
        name = "".join(part[:1].upper() + part[1:] for part in hyperparameter.split("_"))
        assert parameters[name]["DefaultValue"] == value


def test_no_account_but_the_configured_one(built):
    """ARNs name only the configured role's account (image URIs name AWS's own registries)."""
    _, target, _, text, _ = built
    account = target.role.split(":")[4]
    assert set(re.findall(r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):", text)) == {account}


def test_outputs_are_per_execution(steps):
    """Cached steps reuse outputs of earlier executions, so no execution may overwrite them."""
    for name in ("ValidateAndPreprocess", "DataQualityBaseline", "Evaluate"):
        for output in steps[name]["Arguments"]["ProcessingOutputConfig"]["Outputs"]:
            assert "Execution.PipelineExecutionId" in json.dumps(output["S3Output"]["S3Uri"])


# The model selection variants: a comparison of candidates, and a tuning job.



def _flat(definition_json: str) -> dict:
    flat = {}

    def collect(items):
        for step in items:
            flat[step["Name"]] = step
            collect(step.get("Arguments", {}).get("IfSteps", []))
            collect(step.get("Arguments", {}).get("ElseSteps", []))

    collect(json.loads(definition_json)["Steps"])
    return flat


def _resolve(value, variables: dict):
    """A Std:Join / Get expression with the given values for its Get paths."""
    if isinstance(value, dict) and "Std:Join" in value:
        join = value["Std:Join"]
        return join["On"].join(str(_resolve(v, variables)) for v in join["Values"])
    if isinstance(value, dict) and "Get" in value:
        return variables[value["Get"]]
    return value


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    config = variant(tmp_path_factory.mktemp("compare"),
                     replace={'selection = "single"': 'selection = "compare"',
                              "aws = true": "aws = false"})
    target = targets.local(config, LocalStore(tmp_path_factory.mktemp("store")))
    with offline(tmp_path_factory):
        text = definition.build(config, target)
    return config, json.loads(text)


def test_comparison_trains_every_candidate_in_one_job(compared):
    config, doc = compared
    steps = _flat(json.dumps(doc))
    assert steps["Train"]["Type"] == "Training" and "Tune" not in steps
    hyperparameters = steps["Train"]["Arguments"]["HyperParameters"]
    assert hyperparameters == {"candidates": {"Get": "Parameters.Candidates"},
                               "selection_metric": config.metric}
    parameters = {p["Name"]: p for p in doc["Parameters"]}
    assert json.loads(parameters["Candidates"]["DefaultValue"]) == config.candidates
    assert set(config.candidates) >= {"svr", "random_forest", "ridge"}
    assert "C" not in parameters, "the single model's settings are not the comparison's"
    # The best candidate is evaluated and registered like a single model.
    evaluate_inputs = _gets(steps["Evaluate"]["Arguments"]["ProcessingInputs"])
    assert "Steps.Train.ModelArtifacts.S3ModelArtifacts" in evaluate_inputs


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The aws target's definition of the project's mlops.toml (tuning on for aws), built
    twice offline against a local store standing in for the bucket."""
    config = project_config.load()
    store = LocalStore(tmp_path_factory.mktemp("store"))
    target = dataclasses.replace(targets.local(config, store), name="aws")
    with offline(tmp_path_factory):
        first, second = definition.build(config, target), definition.build(config, target)
    return config, target, store, first, second


def test_tuning_is_on_for_aws_and_off_for_local_by_default(built, tuned):
    config = built[0]
    assert config.tunes("aws") and not config.tunes("local")
    assert "Tune" not in _flat(built[3])
    steps = _flat(tuned[3])
    assert steps["Tune"]["Type"] == "Tuning" and "Train" not in steps


def test_tuning_definition_is_byte_identical(tuned):
    assert tuned[3] == tuned[4]


def test_tuning_step_has_the_configured_search(tuned):
    config, _, _, text, _ = tuned
    tuning = config.tuning
    arguments = _flat(text)["Tune"]["Arguments"]
    job = arguments["HyperParameterTuningJobConfig"]
    assert job["Strategy"] == tuning.strategy
    assert job["RandomSeed"] == tuning.seed
    assert job["ResourceLimits"] == {"MaxNumberOfTrainingJobs": tuning.max_jobs,
                                     "MaxParallelTrainingJobs": tuning.max_parallel_jobs}
    assert job["HyperParameterTuningJobObjective"] == {"MetricName": "validation:rmse",
                                                       "Type": "Minimize"}
    continuous = {r["Name"]: r for r in job["ParameterRanges"]["ContinuousParameterRanges"]}
    assert set(continuous) == {r.name for r in tuning.ranges} == {"C", "epsilon", "gamma"}
    for item in tuning.ranges:
        assert (float(continuous[item.name]["MinValue"]), float(continuous[item.name]["MaxValue"]),
                continuous[item.name]["ScalingType"]) == (item.min, item.max, item.scaling)
    training = arguments["TrainingJobDefinition"]
    metrics = {m["Name"]: m["Regex"]
               for m in training["AlgorithmSpecification"]["MetricDefinitions"]}
    assert metrics["validation:rmse"] == r"validation_rmse=([0-9.eE+-]+)"
    assert re.search(metrics["validation:rmse"], "validation_rmse=1.902218").group(1) == "1.902218"


def test_tuning_jobs_run_train_py_with_the_untuned_settings(tuned):
    config, _, store, text, _ = tuned
    training = _flat(text)["Tune"]["Arguments"]["TrainingJobDefinition"]
    static = training["StaticHyperParameters"]
    assert static["regressor"] == {"Get": "Parameters.Regressor"}
    assert not {"C", "epsilon", "gamma"} & set(static), "tuned settings are the tuner's"
    assert static["sagemaker_program"] == "train.py"
    with tarfile.open(store.path(static["sagemaker_submit_directory"])) as archive:
        assert {"train.py", "inference.py"} <= set(archive.getnames())
    parameters = {p["Name"] for p in json.loads(text)["Parameters"]}
    assert "Regressor" in parameters and not {"C", "Epsilon", "Gamma"} & parameters
    channels = {c["ChannelName"] for c in training["InputDataConfig"]}
    assert {"train", "validation", "schema"} <= channels


def test_evaluate_and_register_read_the_top_model_where_it_lands(tuned):
    """SageMaker writes each tuning job's model to <S3OutputPath>/<job name>/output/."""
    _, _, _, text, _ = tuned
    steps = _flat(text)
    variables = {"Execution.PipelineExecutionId": "execution-1",
                 "Steps.Tune.TrainingJobSummaries[0].TrainingJobName": "best-job"}
    output_path = _resolve(
        steps["Tune"]["Arguments"]["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"],
        variables)
    expected = f"{output_path}/best-job/output/model.tar.gz"
    model_input = next(i for i in steps["Evaluate"]["Arguments"]["ProcessingInputs"]
                       if i["InputName"] == "model")
    assert _resolve(model_input["S3Input"]["S3Uri"], variables) == expected
    container = steps["RegisterModel"]["Arguments"]["InferenceSpecification"]["Containers"][0]
    assert _resolve(container["ModelDataUrl"], variables) == expected


def test_ranges_that_do_not_fit_the_regressor_are_refused(tmp_path):
    config = variant(tmp_path, replace={"[tuning.ranges.gamma]": "[tuning.ranges.learning_rate]"})
    from model_build import pipeline

    expected = "learning_rate do not apply to regressor 'svr'"
    with pytest.raises(project_config.ConfigError, match=expected):
        pipeline._check_ranges(config.hyperparameters, config.tuning)


@pytest.mark.parametrize(
    "replace, expected",
    [
        ({'selection = "single"': 'selection = "best"'}, "selection = 'best'"),
        ({'selection = "single"': 'selection = "compare"'},
         "trains the candidates as they are, but [tuning] is on for aws"),
        ({'metric = "rmse"': 'metric = "r2"'}, "metric = 'r2'"),
        ({'[model.candidates.ridge]\nregressor = "ridge"': "[model.candidates.ridge]"},
         "[model.candidates.ridge] needs regressor"),
        ({"seed = 42 ": "seed = 0 "}, "seed = 0 must be"),
        ({"max_parallel_jobs = 2": "max_parallel_jobs = 30"}, "exceeds max_jobs = 20"),
        ({'strategy = "Bayesian"': 'strategy = "Grid"'}, "strategy = 'Grid'"),
        ({'objective = "validation:rmse"': 'objective = "validation:mape"'},
         "objective = 'validation:mape'"),
        ({"min = 1.0": "min = 0.0"},
         "[tuning.ranges.C] Logarithmic scaling needs a minimum above 0"),
        ({"min = 1.0": "min = 200.0"}, "[tuning.ranges.C] min = 200.0 must be below max"),
        ({'type = "continuous"\nmin = 1.0': 'type = "float"\nmin = 1.0'},
         "[tuning.ranges.C] type = 'float'"),
        ({"local = false": 'local = "yes"'}, "[tuning] local = 'yes' must be true or false"),
        ({"max_jobs = 20": "max_job = 20"}, "[tuning] has unknown key(s) max_job"),
        ({'scaling = "Linear"': 'scale = "Linear"'},
         "[tuning.ranges.epsilon] has unknown key(s) scale"),
    ],
)
def test_bad_model_selection_settings_name_the_key(tmp_path, replace, expected):
    with pytest.raises(project_config.ConfigError, match=re.escape(expected)):
        variant(tmp_path, replace=replace)


def test_compare_needs_candidates(tmp_path):
    with pytest.raises(project_config.ConfigError, match=r"needs \[model.candidates.<name>\]"):
        variant(tmp_path, replace={'selection = "single"': 'selection = "compare"',
                                   "aws = true": "aws = false"}, candidates="")


# Every definition the project builds passes the SageMaker API's checks (definition.build
# refuses one that does not; these say which profiles are covered).

def test_hyperparameters_are_strings_from_typed_parameters(built, steps):
    config = built[0]
    parameters = {p["Name"]: p["Type"] for p in json.loads(built[3])["Parameters"]}
    hyperparameters = steps["Train"]["Arguments"]["HyperParameters"]
    for name, value in config.hyperparameters.items():
        parameter = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
        reference = {"Get": f"Parameters.{parameter}"}
        if isinstance(value, str):
            assert (parameters[parameter], hyperparameters[name]) == ("String", reference)
        else:
            assert parameters[parameter] == {float: "Float", int: "Integer"}[type(value)]
            assert hyperparameters[name] == {"Std:Join": {"On": "", "Values": [reference]}}


def test_every_profile_passes_the_api_checks(built, tuned, compared, tmp_path_factory):
    from mlops_core import service_model
    from model_deploy import build as deploy_build

    config, target = built[0], built[1]
    with offline(tmp_path_factory):
        batch = definition.build(config, target, deploy_build.BATCH)
    for text in (built[3], tuned[3], json.dumps(compared[1]), batch):
        assert service_model.definition_problems(json.loads(text)) == []


def test_a_tuned_definition_passes_its_static_numbers_as_strings(tmp_path, tmp_path_factory):
    """An untuned numeric setting is a StaticHyperParameter of the Tune step: a string too."""
    config = variant(tmp_path, replace={
        '[tuning.ranges.gamma]\ntype = "continuous"\nmin = 0.005\nmax = 0.5\n'
        'scaling = "Logarithmic"\n': ""})
    target = dataclasses.replace(targets.local(config, LocalStore(tmp_path / "s3")), name="aws")
    with offline(tmp_path_factory):
        text = definition.build(config, target)
    static = _flat(text)["Tune"]["Arguments"]["TrainingJobDefinition"]["StaticHyperParameters"]
    assert static["gamma"] == {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Gamma"}]}}


def test_a_reused_definition_is_checked_again(tmp_path, monkeypatch):
    """A definition stored before the check (or before it changed) is refused, not reused."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    config = project_config.load()
    target = targets.local(config, LocalStore(tmp_path / "s3"))
    stored = {"Version": "2020-12-01", "Parameters": [{"Name": "C", "Type": "Float"}],
              "Steps": [{"Name": "Train", "Type": "Training", "Arguments": {
                  "HyperParameters": {"C": {"Get": "Parameters.C"}},
                  "RoleArn": target.role, "OutputDataConfig": {"S3OutputPath": "s3://b/m"}}}]}
    cache = tmp_path / "definitions" / f"local-{definition.fingerprint(config, target)}.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps(stored))
    with pytest.raises(definition.DefinitionRefused,
                       match="step Train: HyperParameters.C: expected a string, got the Float "
                             "parameter C"):
        definition.load_or_build(config, target)
