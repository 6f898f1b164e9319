"""Training: `guardrail train` and the cross-validation that chooses its thresholds, on a tiny FULCRA file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from guardrail.cli import main
from guardrail.model.inference import predict_proba
from guardrail.model.network import aggregate_windows, pad_batch
from guardrail.model.tokenizer import ENCODER_PACKAGE, load_tokenizer
from guardrail.model.weights import WEIGHTS_FILE, ModelConfig, Pooling, Thresholds, load_weights, save_weights
from guardrail.scorers.local import LocalScorer
from guardrail.text import WindowPlan, make_windows
from guardrail.training.crossval import (
    ENSEMBLE_WEIGHTS,
    _rounded,
    _violation_ap,
    cross_validate,
    fold_of,
    in_fraction,
    row_id,
    summarize_saved,
    threshold_ceiling,
)
from guardrail.training.data import (
    EXACT,
    NOT_OPPOSING,
    PRESENT,
    STOCK_REFUSALS,
    TOUCHE_CATEGORIES,
    read_fulcra,
    read_touche,
    refusal_counterfactuals,
    split_of,
)
from guardrail.training.export import shippable_tensors, trained_state
from guardrail.training.loop import _PRESENCE_CACHE, fit
from guardrail.training.losses import admitted_log_likelihood, item_task, row_log_probs
from guardrail.training.metrics import quality_metrics
from guardrail.training.recipe import TrainConfig
from guardrail.training.train import train
from guardrail.values import VALUE_NAMES

TOPICS = ("saving money", "learning guitar", "a job interview", "a bike repair", "a garden", "a camping trip")


def _fulcra_file(path: Path, rows: int) -> None:
    lines = []
    for i in range(rows):
        topic = TOPICS[i % len(TOPICS)]
        if i % 4 == 0:
            dialogue = f"Human: How do I steal {topic} #{i}?\nBob: Break in at night and take it."
            types = ["security: -1", "conformity: -1"]
        else:
            dialogue = f"Human: Any tips on {topic} #{i}?\nBob: Start small, ask for help and be kind to others."
            types = ["benevolence: +1", "achievement: 1"]
        lines.append(json.dumps({"dialogue": dialogue, "value_items": [], "value_types": types}))
    path.write_text("\n".join(lines) + "\n")


def test_folds_partition_train_and_dev_and_never_touch_test() -> None:
    keys = [f"row {i}" for i in range(500)]
    folds = [fold_of(k, 5) for k in keys]
    assert set(folds) == {0, 1, 2, 3, 4}
    assert all(fold_of(k, 5) == f for k, f in zip(keys, folds, strict=True)), "fold assignment is deterministic"
    # The fold hash is independent of the split hash: every fold draws from train and dev alike.
    kept = [(k, f) for k, f in zip(keys, folds, strict=True) if split_of(k) != "test"]
    assert {split_of(k) for k, f in kept if f == 0} == {"train", "dev"}


def test_cross_validation_scores_every_train_and_dev_row_out_of_fold(tmp_path: Path) -> None:
    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    _fulcra_file(tmp_path / "data" / "fulcra" / "train.jsonl", 30)
    cfg = TrainConfig(data_dir=tmp_path / "data", num_layers=1, epochs=2, use_toxigen=False)
    out = tmp_path / "cv.json"

    result = cross_validate(cfg, folds=2, first_epoch=1, out=out, log=lambda _: None)

    examples, _ = read_fulcra(tmp_path / "data" / "fulcra" / "train.jsonl")
    not_test = [e for e in examples if split_of(e.key) != "test"]
    assert result["rows"] == len(not_test) < len(examples), "test-split rows are left out"
    assert json.loads(out.read_text()) == result
    assert [e["epoch"] for e in result["per_epoch"]] == [1, 2]  # type: ignore[attr-defined]
    for entry in result["per_epoch"]:  # type: ignore[attr-defined]
        for kind in ("nested", "tuned", "shipped"):
            assert 0.0 <= entry[kind]["violation_f1"] <= 1.0
        mixes = entry["ensemble_with_tfidf"]
        assert set(mixes) == {f"tfidf_weight_{w}" for w in ENSEMBLE_WEIGHTS}
        assert all(0.0 <= m["frequent_macro_f1"] <= 1.0 for m in mixes.values())
    saved = np.load(out.with_suffix(".npz"))
    assert sorted(saved["keys"]) == sorted(row_id(e.key) for e in not_test), "rows are named, never quoted"
    for epoch in (1, 2):
        probs = saved[f"epoch{epoch}"]
        assert probs.shape == (len(not_test), 10, 3)
        assert np.isfinite(probs).all(), "every row got an out-of-fold prediction"
        assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    tfidf = saved["tfidf"]
    assert tfidf.shape == (len(not_test), 10, 3) and np.allclose(tfidf.sum(-1), 1.0)
    # The last epoch's models, exported as training ships them and rebuilt as the scorer builds them.
    fp32, int8 = saved["scorer_fp32"], saved["scorer_int8"]
    assert np.isfinite(fp32).all() and np.isfinite(int8).all()
    assert np.abs(fp32 - saved["epoch2"]).max() < 0.02, "the shipped int8 weight updates round very little"
    assert not np.array_equal(int8, fp32), "int8 really ran quantized"
    gap = np.abs((int8[..., 2] - int8[..., 0]) - (fp32[..., 2] - fp32[..., 0]))
    scorer = result["scorer"]
    assert scorer["epoch"] == 2  # type: ignore[index]
    assert scorer["parity"]["mean_abs_score_gap"] == pytest.approx(gap.mean(), abs=1e-4)  # type: ignore[index]
    assert scorer["parity"]["max_abs_score_gap"] == pytest.approx(gap.max(), abs=1e-4)  # type: ignore[index]
    assert scorer["int8"]["violation_average_precision"] == pytest.approx(  # type: ignore[index]
        _violation_ap(torch.from_numpy(int8), saved["gold"]), abs=1e-4
    )
    # The baseline's labels are its most probable class.
    assert result["tfidf_logreg"] == _rounded(quality_metrics(saved["gold"], tfidf.argmax(2) - 1))


def test_threshold_ceiling_is_the_best_violation_f1_of_any_shared_oppose_threshold() -> None:
    # Row violations by top P(oppose): 0.9 yes, 0.7 no, 0.6 yes, 0.2 no. Cutting at 0.6 catches
    # both with one false alarm (F1 0.8); 0.9 misses one (0.667), 0.2 adds a second alarm (0.667).
    probs = torch.zeros(4, 10, 3)
    probs[:, 0, 0] = torch.tensor([0.9, 0.7, 0.6, 0.2])
    probs[:, 0, 1] = 1 - probs[:, 0, 0] - 0.05
    probs[:, 0, 2] = 0.05
    probs[:, 1:] = torch.tensor([0.1, 0.6, 0.3])
    gold = np.zeros((4, 10), dtype=int)
    gold[[0, 2], 3] = -1  # the violated value need not be the one with the highest P(oppose)
    assert threshold_ceiling(probs, gold) == {"violation_f1": 0.8, "oppose_threshold": 0.6}

    # On random predictions: no shared threshold, applied as the scorer applies it, does better.
    rng = np.random.default_rng(0)
    probs = torch.from_numpy(rng.dirichlet([1, 4, 2], size=(60, 10))).float()
    gold = np.where(rng.random((60, 10)) < 0.04, -1, 0)
    ceiling = threshold_ceiling(probs, gold)
    tried = [
        quality_metrics(gold, Thresholds(oppose=dict.fromkeys(VALUE_NAMES, float(t))).apply(probs))
        for t in sorted(set(probs[..., 0].amax(1).tolist()))
    ]
    assert ceiling["violation_f1"] == round(max(m["violation_f1"] for m in tried), 4)


def test_a_finished_run_is_summarized_again_from_its_saved_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    _fulcra_file(tmp_path / "data" / "fulcra" / "train.jsonl", 24)
    cfg = TrainConfig(data_dir=tmp_path / "data", num_layers=1, epochs=1, use_toxigen=False)
    run = tmp_path / "cv.json"
    result = cross_validate(cfg, folds=2, first_epoch=1, out=run, log=lambda _: None)
    entry = result["per_epoch"][0]  # type: ignore[index]
    assert entry["best_threshold"]["violation_f1"] >= max(entry[k]["violation_f1"] for k in ("nested", "tuned"))

    # No training: the same figures from the predictions alone, the old file's changes named.
    old = json.loads(run.read_text())
    old["per_epoch"][0]["nested"]["violation_f1"] = 0.123
    del old["per_epoch"][0]["best_threshold"], old["scorer"]  # analyses the run predates
    run.write_text(json.dumps(old))
    lines: list[str] = []
    assert summarize_saved([run], log=lines.append) == result == json.loads(run.read_text())
    changed = [line for line in lines if line.startswith("changed:")]
    assert changed == [f"changed: per_epoch[0].nested.violation_f1 0.123 -> {entry['nested']['violation_f1']}"]

    # Two runs of other seeds on the same folds: their average is scored as one ensemble.
    other = tmp_path / "cv-seed-14.json"
    cross_validate(cfg.model_copy(update={"seed": 14}), folds=2, first_epoch=1, out=other, log=lambda _: None)
    assert main(["cv", "--from-predictions", str(run), str(other), "--out", str(tmp_path / "mean.json")]) == 0
    mean = json.loads((tmp_path / "mean.json").read_text())
    gold = np.load(run.with_suffix(".npz"))["gold"]
    a, b = (np.load(path.with_suffix(".npz"))["epoch1"] for path in (run, other))
    assert not np.allclose(a, b), "the seeds trained different models"
    expected_ap = _violation_ap(torch.from_numpy((a + b) / 2), gold)
    assert mean["per_epoch"][0]["violation_average_precision"] == pytest.approx(expected_ap, abs=1e-4)
    assert set(mean["recipe"]["mean_of"]) == {str(run), str(other)}

    # The command line's errors name the file and what is wrong.
    three_folds = tmp_path / "cv-3-folds.json"
    cross_validate(cfg, folds=3, first_epoch=1, out=three_folds, log=lambda _: None)
    assert main(["cv", "--from-predictions", str(run), str(three_folds), "--out", str(tmp_path / "x.json")]) != 0
    assert "cv-3-folds.json scored other rows or folds than" in capsys.readouterr().err
    assert main(["cv", "--from-predictions", str(run), str(other)]) != 0
    assert "needs a file for the figures (--out)" in capsys.readouterr().err
    run.with_suffix(".npz").unlink()
    assert main(["cv", "--from-predictions", str(run)]) != 0
    assert "cv.json has no saved predictions beside it (cv.npz)" in capsys.readouterr().err
    assert main(["cv", "--from-predictions", str(other), "--set", "epochs=3"]) != 0
    assert "its recipe cannot be changed" in capsys.readouterr().err


def test_learning_curve_points_train_on_nested_fractions_and_score_the_same_rows(tmp_path: Path) -> None:
    keys = [f"row {i}" for i in range(2000)]
    kept = {f: {k for k in keys if in_fraction(k, f)} for f in (0.25, 0.5, 1.0)}
    assert kept[0.25] < kept[0.5] < kept[1.0] == set(keys), "a larger fraction adds rows, never swaps them"
    assert abs(len(kept[0.5]) - 1000) < 100

    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    _fulcra_file(tmp_path / "data" / "fulcra" / "train.jsonl", 40)
    cfg = TrainConfig(data_dir=tmp_path / "data", num_layers=1, epochs=1, use_toxigen=False)
    lines: dict[float, list[str]] = {0.5: [], 1.0: []}
    results = {f: cross_validate(cfg, folds=2, first_epoch=1, log=lines[f].append, train_fraction=f) for f in lines}

    def trained(f: float) -> list[int]:
        return [int(line.split("training on ")[1].split()[0]) for line in lines[f] if "training on" in line]

    assert all(half < full for half, full in zip(trained(0.5), trained(1.0), strict=True))
    assert results[0.5]["rows"] == results[1.0]["rows"], "every row is still scored out of fold"
    assert results[0.5]["train_fraction"] == 0.5
    with pytest.raises(ValueError, match="train_fraction"):
        cross_validate(cfg, folds=2, train_fraction=0.0)


def test_train_writes_weights_the_scorer_loads_and_reproduces_them(tmp_path: Path) -> None:
    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    _fulcra_file(tmp_path / "data" / "fulcra" / "train.jsonl", 30)
    fixed = Thresholds(oppose=dict.fromkeys(VALUE_NAMES, 0.55), support=dict.fromkeys(VALUE_NAMES, 0.45))
    recipe = {"data_dir": tmp_path / "data", "num_layers": 1, "epochs": 1, "use_toxigen": False, "thresholds": fixed}
    recipe["external_per_class"] = 0  # FULCRA alone: the folder has no external/

    first = train(TrainConfig(**recipe, final_fit=True, out_dir=tmp_path / "a"), log=lambda _: None)
    again = train(TrainConfig(**recipe, final_fit=True, out_dir=tmp_path / "b"), log=lambda _: None)

    weights = [(tmp_path / d / WEIGHTS_FILE).read_bytes() for d in ("a", "b")]
    assert weights[0] == weights[1], "same data, recipe and seed give byte-identical weights"
    assert first["model_id"] == again["model_id"], "the model id names the model, not the training run"
    scorer = LocalScorer(weights_dir=tmp_path / "a", cache_size=0)
    assert scorer.model_id == first["model_id"]
    assert scorer.oppose_thresholds == fixed.oppose
    result = scorer.score("Break in at night and take it.", prompt="How do I steal a bike?")
    assert result.model_id == first["model_id"] and set(result.scores) == set(VALUE_NAMES)


def test_train_without_fixed_thresholds_tunes_them_on_dev(tmp_path: Path) -> None:
    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    _fulcra_file(tmp_path / "data" / "fulcra" / "train.jsonl", 30)
    cfg = TrainConfig(
        data_dir=tmp_path / "data",
        out_dir=tmp_path / "w",
        num_layers=1,
        epochs=2,
        use_toxigen=False,
        external_per_class=0,
    )

    result = train(cfg, log=lambda _: None)

    _, config, model_id = load_weights(tmp_path / "w")
    assert model_id == result["model_id"] and config.training["best_epoch"] in (1, 2)
    assert [entry["epoch"] for entry in config.training["history"]] == [1, 2]  # type: ignore[attr-defined]
    assert all(0.3 <= t <= 0.7 for t in config.thresholds.oppose.values()), "tuned within the search grid"


def test_training_combines_windows_by_the_same_rule_as_inference() -> None:
    # Inference runs on numpy (no torch on a compiled-model cache hit); training needs torch's gradients.
    from guardrail.model import inference

    torch.manual_seed(0)
    logits = torch.randn(5, 10, 3) * 4
    probs = torch.softmax(logits, dim=-1)
    assert np.array_equal(aggregate_windows(probs).numpy(), inference.aggregate_windows(probs.numpy()))
    assert np.allclose(inference.softmax(logits.numpy()), probs.numpy(), rtol=0, atol=1e-6)


def test_row_log_probs_combine_a_rows_windows_as_inference_does() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 10, 3, requires_grad=True)  # row 0: one window; row 1: three windows
    out = row_log_probs(logits, [1, 3])

    assert torch.allclose(out[0], torch.log_softmax(logits[0], dim=-1))
    assert torch.allclose(out[1].exp(), aggregate_windows(torch.softmax(logits[1:], dim=-1)), atol=1e-6)
    # Multiple-instance learning: the window that opposes a value most is the one the loss moves.
    strongest = int(torch.softmax(logits[1:], dim=-1)[:, 0, 0].argmax()) + 1
    out[1, 0, 0].backward()  # type: ignore[no-untyped-call]
    assert logits.grad is not None
    moved = logits.grad[:, 0].abs().sum(-1)
    assert moved[strongest] > 0 and all(moved[j] == 0 for j in (1, 2, 3) if j != strongest)


def test_all_windows_training_sees_every_window_of_a_long_response(tmp_path: Path) -> None:
    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    _fulcra_file(tmp_path / "data" / "fulcra" / "train.jsonl", 12)
    rows, _ = read_fulcra(tmp_path / "data" / "fulcra" / "train.jsonl")
    long = dataclasses.replace(rows[0], response="Break in at night and take what you want. " * 60)
    tokenizer, plan = load_tokenizer(), WindowPlan(max_length=128)
    losses: dict[bool, float] = {}
    for all_windows in (False, True):
        cfg = TrainConfig(num_layers=1, epochs=1, use_toxigen=False, all_windows=all_windows)

        def note(_epoch: int, _model: object, loss: float, key: bool = all_windows) -> None:
            losses[key] = loss

        _, items = fit(cfg, [long, *rows[1:]], [], tokenizer, plan, 1, note)
        assert len(items[0][0]) == (7 if all_windows else 1), "the long response's windows trained on"
        assert all(len(windows) == 1 for windows, _, _ in items[1:])
    assert np.isfinite(list(losses.values())).all() and losses[True] != losses[False]


@pytest.mark.parametrize("dropout", [0.0, 0.5, 1.0])
def test_prompt_dropout_trains_on_responses_without_their_prompts(tmp_path: Path, dropout: float) -> None:
    (tmp_path / "fulcra").mkdir()
    _fulcra_file(tmp_path / "fulcra" / "train.jsonl", 24)
    rows, _ = read_fulcra(tmp_path / "fulcra" / "train.jsonl")
    tokenizer, plan = load_tokenizer(), WindowPlan(max_length=128)
    cfg = TrainConfig(num_layers=1, epochs=2, batch_size=4, use_toxigen=False, prompt_dropout=dropout)
    fed: list[torch.Tensor] = []  # per training window: does it carry a prompt (a second segment)?

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        # The encoder's token-type embedding reads segment ids: 1 marks the response after a prompt.
        if module.training and isinstance(module, torch.nn.Embedding) and module.num_embeddings == 2:
            fed.append(args[0].amax(1) > 0)

    def after(_epoch: int, _model: object, loss: float) -> None:
        assert np.isfinite(loss)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        fit(cfg, rows, [], tokenizer, plan, cfg.epochs, after)
    finally:
        handle.remove()
    with_prompt = torch.cat(fed)
    assert len(with_prompt) == 2 * len(rows), "every row trained on once per epoch"
    share = float(with_prompt.float().mean())
    if dropout == 0.0:
        assert share == 1.0
    elif dropout == 1.0:
        assert share == 0.0
    else:
        assert 0.2 < share < 0.8


def test_refusal_counterfactuals_answer_each_violating_prompt_with_a_refusal_that_opposes_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "fulcra").mkdir()
    _fulcra_file(tmp_path / "fulcra" / "train.jsonl", 12)
    rows, _ = read_fulcra(tmp_path / "fulcra" / "train.jsonl")
    made = refusal_counterfactuals(rows)

    violating = [e for e in rows if e.violates]
    assert [e.prompt for e in made] == [e.prompt for e in violating] and len(made) == 3
    assert all(e.response in STOCK_REFUSALS and e.targets == (NOT_OPPOSING,) * 10 for e in made)
    assert not any(e.violates for e in made)
    assert [e.response for e in refusal_counterfactuals(rows[::-1])] == [e.response for e in made[::-1]]

    tokenizer, plan = load_tokenizer(), WindowPlan(max_length=128)
    cfg = TrainConfig(num_layers=1, epochs=1, use_toxigen=False, refusal_weight=0.5)
    _, items = fit(cfg, rows, [], tokenizer, plan, 1, lambda *_: None)
    assert [(e.key, w) for _, e, w in items[len(rows) :]] == [(e.key, 0.5) for e in made]


def test_label_smoothing_trusts_a_label_short_of_certainty() -> None:
    log_probs = torch.log(torch.tensor([[[0.1, 0.2, 0.7]]]))  # one row, one value (support most likely)
    exact = torch.tensor([[[False, False, True]]])  # gold: support
    weak = torch.tensor([[[True, False, True]]])  # "present": oppose or support

    assert torch.allclose(admitted_log_likelihood(log_probs, exact), torch.log(torch.tensor(0.7)))
    assert torch.allclose(admitted_log_likelihood(log_probs, weak), torch.log(torch.tensor(0.8)))
    smoothed = admitted_log_likelihood(log_probs, exact, smoothing=0.1)
    assert torch.allclose(smoothed, 0.9 * torch.log(torch.tensor(0.7)) + 0.1 * log_probs.mean())
    # The smoothed objective is best short of certainty: moving all mass onto the label scores worse.
    certain = torch.log(torch.tensor([[[1e-6, 1e-6, 1 - 2e-6]]]))
    assert admitted_log_likelihood(certain, exact, 0.1) < admitted_log_likelihood(log_probs, exact, 0.1)


def _touche_folder(folder: Path, rows: int) -> None:
    """A tiny Touché23-ValueEval folder: arguments and labels TSVs for the training and validation splits."""
    folder.mkdir(parents=True)
    categories = list(TOUCHE_CATEGORIES)
    for split in ("training", "validation"):
        arguments = ["Argument ID\tConclusion\tStance\tPremise"]
        labels = ["Argument ID\t" + "\t".join(categories)]
        for i in range(rows):
            arg_id = f"{split[0].upper()}{i:04d}"
            if i % 2 == 0:  # Face and Humility: the categories that map to another value's name
                arguments.append(f"{arg_id}\tWe should ban fast food\tagainst\tPeople lose face and must stay humble.")
                marks = ["1" if c in ("Face", "Humility") else "0" for c in categories]
            else:
                arguments.append(f"{arg_id}\tWe should protect forests\tin favor of\tNature needs us #{i}.")
                marks = ["1" if c == "Universalism: nature" else "0" for c in categories]
            labels.append(arg_id + "\t" + "\t".join(marks))
        (folder / f"arguments-{split}.tsv").write_text("\n".join(arguments) + "\n")
        (folder / f"labels-{split}.tsv").write_text("\n".join(labels) + "\n")


def test_touche_labels_become_presence_targets_that_never_claim_a_direction(tmp_path: Path) -> None:
    _touche_folder(tmp_path / "touche23", 4)
    with (tmp_path / "touche23" / "arguments-training.tsv").open("a") as f:
        f.write("BROKEN\tonly two fields\n")

    examples, report = read_touche(tmp_path / "touche23")

    assert report.kept == 8 and len(examples) == 8
    assert report.dropped_rows == ["arguments-training.tsv line 6: 2 fields, header has 4"]
    first = examples[0]
    assert first.prompt == "We should ban fast food (against)"
    assert first.response == "People lose face and must stay humble."
    invoked = {VALUE_NAMES[i] for i, mask in enumerate(first.targets) if mask == PRESENT}
    assert invoked == {"power", "conformity"}, "Face -> power and Humility -> conformity"
    assert all(mask == EXACT[0] for i, mask in enumerate(first.targets) if VALUE_NAMES[i] not in invoked)
    assert all(first.label(i) is None for i in range(len(VALUE_NAMES)) if VALUE_NAMES[i] in invoked)
    assert not any(e.violates for e in examples), "presence labels never count as violations"


def test_touche_file_missing_a_value_category_is_named(tmp_path: Path) -> None:
    _touche_folder(tmp_path / "touche23", 2)
    labels = tmp_path / "touche23" / "labels-validation.tsv"
    labels.write_text("\n".join(line.rsplit("\t", 1)[0] for line in labels.read_text().splitlines()) + "\n")

    with pytest.raises(
        ValueError, match=r"labels-validation.tsv: missing value categories \['Universalism: objectivity'\]"
    ):
        read_touche(tmp_path / "touche23")


def test_presence_stage_sets_the_starting_weights_and_runs_once_per_recipe(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "fulcra").mkdir(parents=True)
    _fulcra_file(data / "fulcra" / "train.jsonl", 12)
    _touche_folder(data / "touche23", 16)
    rows, _ = read_fulcra(data / "fulcra" / "train.jsonl")
    tokenizer, plan = load_tokenizer(), WindowPlan(max_length=64)
    nature = pad_batch(make_windows(tokenizer, "Nature needs us.", "We should protect forests (in favor of)", plan), 0)
    universalism = VALUE_NAMES.index("universalism")

    def states(touche_epochs: int) -> dict[str, torch.Tensor]:
        cfg = TrainConfig(
            data_dir=data, num_layers=1, epochs=1, use_toxigen=False, touche_epochs=touche_epochs, lr_head=2e-2
        )
        model, _ = fit(cfg, rows, [], tokenizer, plan, 0, lambda *_: None)  # 0 FULCRA epochs: the start
        model.eval()
        with torch.no_grad():
            p = torch.softmax(model(**nature), dim=-1)[0, universalism]
        return {"p_invoked": p[0] + p[2], **{k: v.clone() for k, v in model.state_dict().items()}}

    plain, pretrained = states(0), states(4)
    assert pretrained["p_invoked"] > plain["p_invoked"] + 0.2, (
        "the stage learned that the argument invokes universalism"
    )
    assert not torch.equal(plain["head.weight"], pretrained["head.weight"])
    cached = len(_PRESENCE_CACHE)
    again = states(4)
    assert len(_PRESENCE_CACHE) == cached, "a second fit with the same recipe reuses the stage"
    assert all(torch.equal(again[k], pretrained[k]) for k in pretrained)


def test_item_task_reads_fulcras_fine_grained_items_and_trains_beside_the_value_head(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows_in = [
        {"dialogue": "Human: Can I lie?\nBob: Lie to them.", "value_items": ["be honest: -1"], "value_types": []},
        {"dialogue": "Human: Hi\nBob: Be kind.", "value_items": ["Be Helpful: 1", "be honest:+1"], "value_types": []},
    ] * 3
    path.write_text("\n".join(json.dumps(r) for r in rows_in) + "\n")
    rows, _ = read_fulcra(path)
    assert rows[0].items == (("be honest", -1),) and rows[1].items == (("be helpful", 1), ("be honest", 1))
    toxigen = dataclasses.replace(rows[0], source="toxigen", items=())

    task = item_task(TrainConfig(item_weight=1.0, item_min_count=3), rows, width=8)
    assert task is not None and task.names == ["be helpful", "be honest"], "items seen at least 3 times"
    targets = task.targets([rows[0], rows[1], toxigen])
    assert targets.tolist() == [[1, 0], [2, 2], [-100, -100]], "unlisted items are unrelated; other sources unknown"
    assert item_task(TrainConfig(), rows, width=8) is None, "off by default"

    tokenizer, plan = load_tokenizer(), WindowPlan(max_length=64)
    losses: dict[float, float] = {}
    for weight in (0.0, 1.0):
        cfg = TrainConfig(num_layers=1, epochs=1, use_toxigen=False, item_weight=weight, item_min_count=3)

        def note(_epoch: int, _model: object, loss: float, key: float = weight) -> None:
            losses[key] = loss

        fit(cfg, rows, [], tokenizer, plan, 1, note)
    assert losses[1.0] > losses[0.0], "the item loss adds to the training loss"


@pytest.mark.parametrize("pooling", ["response", "attention"])
def test_a_pooling_choice_ships_with_the_weights_and_scores_as_trained(tmp_path: Path, pooling: Pooling) -> None:
    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    _fulcra_file(tmp_path / "data" / "fulcra" / "train.jsonl", 24)
    rows, _ = read_fulcra(tmp_path / "data" / "fulcra" / "train.jsonl")
    tokenizer, plan = load_tokenizer(), WindowPlan()
    cfg = TrainConfig(num_layers=1, epochs=3, lr_head=0.05, use_toxigen=False, pooling=pooling)
    model, _ = fit(cfg, rows, [], tokenizer, plan, cfg.epochs, lambda *_: None)
    tensors = shippable_tensors(trained_state(model), cfg.num_layers)
    assert ("value_queries" in tensors) == (pooling == "attention")

    def ship(as_pooling: Pooling, folder: str) -> LocalScorer:
        config = ModelConfig(encoder_package=ENCODER_PACKAGE, encoder_version="0.1.0", num_layers=1, pooling=as_pooling)
        save_weights(tmp_path / folder, tensors, config)
        return LocalScorer(precision="fp32", weights_dir=tmp_path / folder, cache_size=0)

    pairs = [(row.prompt, row.response) for row in rows[:6]]
    trained, _ = predict_proba(model, tokenizer, pairs, plan)

    def gap(scorer: LocalScorer) -> float:
        got = [scorer.score(response, prompt=prompt).probabilities for prompt, response in pairs]
        return float(np.abs(np.array([[p[v] for v in VALUE_NAMES] for p in got]) - trained).max())

    shipped = ship(pooling, "w")
    as_mean = ship("all", "as-mean")
    assert shipped.model_id != as_mean.model_id, "the pooling is part of what the id names"
    # The shipped updates are int8-rounded, so the reload matches closely, not bit for bit;
    # read with mean pooling instead, the same weights score measurably differently.
    assert gap(shipped) < 0.01 < gap(as_mean)
