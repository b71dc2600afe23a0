"""`slidestream synth-cohort`, `mil train` and `mil predict` end to end on a small synthetic cohort."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from slidestream.cli import main
from tiling import PatchStore

N_SLIDES = 8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A cohort of 8 slides of 768 px at 0.5 um/px, tiled at 128 px with stain_stats features."""
    root = tmp_path_factory.mktemp("cohort")
    assert main(["synth-cohort", str(root / "cohort"), "--n", str(N_SLIDES), "--seed", "18", "--dimensions", "768",
                 "--slide-mpp", "0.5", "-q"]) == 0  # fmt: skip
    results = root / "results"
    assert main(["tile", str(root / "cohort" / "slides"), "-o", str(results), "--size", "128", "--mpp", "0.5",
                 "-q"]) == 0  # fmt: skip
    assert main(["features", str(results), "-q"]) == 0
    return root


def _train(root, out, task, *targets, labels=None, group="patient_id", folds=2, epochs=3, extra=()):
    """`slidestream mil train` on the cohort's stores: its labels.csv unless `labels` names another table;
    `group` None: no grouped split."""
    grouping = ["--group", group] if group else []
    return main(["mil", "train", str(root / "results"), "--labels", str(labels or root / "cohort" / "labels.csv"),
                 "--task", task, "--target", *targets, *grouping, "--folds", str(folds), "--epochs", str(epochs),
                 "-o", str(out), "-q", *extra])  # fmt: skip


def test_cohort_labels_follow_the_ground_truth(cohort):
    labels = pd.read_csv(cohort / "cohort" / "labels.csv")
    assert list(labels.columns[:8]) == [
        "slide_id",
        "patient_id",
        "cancer",
        "grade",
        "mut_a",
        "mut_b",
        "time",
        "event",
    ]
    assert len(labels) == N_SLIDES and labels["slide_id"].is_unique
    assert sorted(p.name for p in (cohort / "cohort" / "slides").glob("*.svs")) == [
        f"{s}.svs" for s in labels.slide_id
    ]
    for row in labels.itertuples():
        truth = json.loads((cohort / "cohort" / "slides" / f"{row.slide_id}.truth.json").read_text())
        assert row.cancer == int(truth["tumor_fraction"] > 0)
    assert labels.loc[labels.cancer == 0, "grade"].isna().all()
    assert labels.loc[labels.cancer == 1, "grade"].between(1, 5).all()
    assert 0 < labels.cancer.sum() < N_SLIDES
    assert set(labels.event) <= {0, 1} and (labels.time > 0).all()
    # Another run into the same folder is refused: it never overwrites a cohort.
    assert main(["synth-cohort", str(cohort / "cohort"), "--n", "2", "--dimensions", "128", "-q"]) == 2


@pytest.fixture(scope="module")
def cancer_model(cohort, tmp_path_factory):
    """A binary cancer model (2 folds, 3 epochs) on the cohort's stores."""
    model = tmp_path_factory.mktemp("models") / "cancer"
    assert _train(cohort, model, "binary", "cancer") == 0
    return model


def test_train_then_predict_binary(cohort, cancer_model, tmp_path):
    from mil import load_model
    from tiling import PatchStore
    from wsi import qupath

    model = cancer_model
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["task"] == "binary" and len(metrics["per_fold"]) == 2 and "auc" in metrics["summary"]
    oof = pd.read_csv(model / "oof_predictions.csv")
    assert len(oof) == N_SLIDES and {"slide_id", "fold", "probability", "true_cancer"} <= set(oof.columns)
    assert oof["probability"].between(0, 1).all()
    # Beside the mean of the folds' AUCs, the AUC of all out-of-fold predictions at once.
    pooled = roc_auc_score(oof["true_cancer"], oof["probability"])
    assert metrics["summary"]["auc"]["pooled"] == pytest.approx(pooled)
    assert "pooled" not in metrics["summary"]["balanced_accuracy"]
    assert (model / "roc_cancer.png").stat().st_size > 0 and (model / "plan.json").exists()
    assert (model / "training_curves.png").stat().st_size > 0
    checkpoint = load_model(model / "fold_1")
    # Each fold standardises with its own training slides' tiles; the checkpoint keeps it, the model applies it.
    scale = checkpoint.model.feature_scale
    assert len(scale) == 53 and min(scale.sd) > 0
    assert scale != load_model(model / "fold_0").model.feature_scale
    assert "feature_scale" not in json.loads((model / "mil_model.json").read_text())
    assert (
        checkpoint.config["feature"] == "stain_stats"
        and checkpoint.config["encoder"]["encoder"] == "stain_stats"
    )

    out = tmp_path / "predicted"
    assert main(["mil", "predict", str(cohort / "results"), "--model", str(model), "-o", str(out), "-q"]) == 0
    predictions = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str})
    assert list(predictions.columns) == ["slide_id", "probability_mean", "probability_sd", "tiles"]
    assert len(predictions) == N_SLIDES and predictions.slide_id.is_unique
    assert (predictions.probability_sd >= 0).all()
    features = pd.read_csv(out / "slide_features.csv")
    assert (
        len(features) == N_SLIDES and "high_attention_fraction" in features and "stain_stats_52" in features
    )
    for row in predictions.itertuples():
        store = PatchStore.open(cohort / "results" / "slides" / row.slide_id / "patches.zarr")
        scores = store.scores("cancer")
        assert scores.shape == (len(store), 4) == (row.tiles, 4)
        assert scores.attrs["columns"] == ["attention", "attention_sd", "attention_rank", "high_attention"]
        attention = scores[:, 0]
        assert np.all(attention >= 0) and np.isclose(attention.sum(), 1, atol=1e-3)  # softmax, fold mean
        objects = qupath.read_geojson(out / "slides" / row.slide_id / "heatmap_cancer.geojson")
        assert len(objects) == len(store) and all(o.object_type == "tile" for o in objects)
        high = [o for o in objects if o.classification == "High attention"]
        assert len(high) == int(scores[:, 3].sum()) and 1 <= len(high) <= max(
            1, int(np.ceil(0.1 * len(store)))
        )
        assert set(objects[0].measurements) == set(scores.attrs["columns"])
        assert (out / "slides" / row.slide_id / "heatmap_cancer.png").stat().st_size > 0


def test_grade_and_survival(cohort, tmp_path, capsys):
    # The cohort is too small for five grades in two folds: grade 1 benign, 2 cancer; one benign slide unlabelled.
    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    labels["grade"] = (1 + labels.cancer).astype("Int64")
    labels.loc[labels.index[labels.cancer == 0][0], "grade"] = pd.NA
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code = _train(cohort, tmp_path / "grade", "grade", "grade", labels=tmp_path / "labels.csv", group=None,
                  extra=["--grade-link", "regression"])  # fmt: skip
    assert code == 0
    assert "left out 1 slide(s)" in capsys.readouterr().out
    from mil import load_model

    checkpoint = load_model(tmp_path / "grade" / "fold_0")
    assert checkpoint.task.link == "regression" and checkpoint.model.n_outputs == 1
    assert (tmp_path / "grade" / "confusion_matrix.png").stat().st_size > 0
    oof = pd.read_csv(tmp_path / "grade" / "oof_predictions.csv")
    assert len(oof) == N_SLIDES - 1 and {"p_1", "p_2"} <= set(oof.columns)
    # One time per patient: 8 slides in 2 folds (and 2 inner parts) stratified by event and time quartile need
    # strata of more than one slide, which a patient's slides sharing a quartile give.
    surv = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    surv["time"] = 10.0 * surv.patient_id.rank(method="dense")
    surv.to_csv(tmp_path / "surv.csv", index=False)
    code = _train(cohort, tmp_path / "surv", "survival", "time", "event", labels=tmp_path / "surv.csv")
    assert code == 0
    assert (tmp_path / "surv" / "kaplan_meier_risk_groups.png").stat().st_size > 0
    assert "c_index" in json.loads((tmp_path / "surv" / "metrics.json").read_text())["summary"]


def test_bad_labels_one_error_listing_them(cohort, tmp_path, capsys):
    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    bad = pd.concat([labels.iloc[1:], labels.iloc[[1]]])  # S000 missing, S001 repeated
    bad = pd.concat([bad, pd.DataFrame([{"slide_id": "NOPE", "patient_id": "P999", "cancer": 1, "grade": 1,
                                         "mut_a": 0, "mut_b": 0, "time": 1.0, "event": 1}])])  # fmt: skip
    bad.to_csv(tmp_path / "bad.csv", index=False)
    code = main(["mil", "train", str(cohort / "results"), "--labels", str(tmp_path / "bad.csv"), "--task",
                 "binary", "--target", "cancer", "--folds", "2", "-o", str(tmp_path / "m"), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "more than once: ['S001']" in err
        and "no patch store: ['NOPE']" in err
        and "no label: ['S000']" in err
    )
    assert not (tmp_path / "m").exists()


def test_labels_subset_uses_the_slides_present(cohort, tmp_path, capsys):
    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    master = pd.concat([labels, labels.iloc[:2].assign(slide_id=["OTHER1", "OTHER2"])])  # a master table
    master.to_csv(tmp_path / "master.csv", index=False)
    args = ["mil", "train", str(cohort / "results"), "--labels", str(tmp_path / "master.csv"), "--task", "binary",
            "--target", "cancer", "--folds", "2", "--epochs", "2"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "strict"), "-q"]) == 2  # the default keeps the error
    assert "2 labelled slide(s) have no patch store" in capsys.readouterr().err
    assert main([*args, "--labels-subset", "-o", str(tmp_path / "m"), "-q"]) == 0
    assert "2 row(s)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["n_slides"] == N_SLIDES and metrics["unused_labels"] == ["OTHER1", "OTHER2"]


def _two_folders(cohort, tmp_path):
    """Run folders a/ and b/ (links to the cohort's store folders, half each) and their tables a.csv, b.csv."""
    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    ids = list(labels.slide_id)
    for name, part in (("a", ids[: N_SLIDES // 2]), ("b", ids[N_SLIDES // 2 :])):
        (tmp_path / name / "slides").mkdir(parents=True)
        for slide_id in part:
            (tmp_path / name / "slides" / slide_id).symlink_to(cohort / "results" / "slides" / slide_id)
        labels[labels.slide_id.isin(part)].to_csv(tmp_path / f"{name}.csv", index=False)
    return labels, ids


def _set_slide_id(store_path, value) -> None:
    """Set a store's slide_id attribute (None: remove it)."""
    import zarr

    group = zarr.open_group(store_path, mode="r+")
    attrs = {k: v for k, v in group.attrs.asdict().items() if k != "slide_id"}
    group.attrs.put(attrs if value is None else {**attrs, "slide_id": value})


def test_labels_option_repeats_and_either_order_parses():
    """`--labels a.csv --labels b.csv` stacks the tables; `--labels l.csv RESULTS` (main's order) still parses."""
    from slidestream.cli import build_parser

    parse = build_parser().parse_args
    rest = ["--task", "binary", "--target", "cancer", "-o", "m"]
    before = parse(["mil", "train", "--labels", "l.csv", "results", *rest])
    after = parse(["mil", "train", "results", "--labels", "l.csv", *rest])
    assert before.results == after.results == ["results"] and before.labels == after.labels == ["l.csv"]
    both = parse(["mil", "train", "--labels", "a.csv", "ra", "rb", "--labels", "b.csv", *rest])
    assert both.results == ["ra", "rb"] and both.labels == ["a.csv", "b.csv"]


def test_several_run_folders_train_as_one(cohort, tmp_path, capsys):
    """`mil train A B --labels a.csv --labels b.csv`: the stores of both folders with both tables stacked train
    exactly as one folder holding them all; metrics.json records what it was trained on and `mil predict` of
    one of the folders says its slides were in the training set. The same folder twice, an id in two folders,
    stores of two encoders or of another tile size, and a table lacking a column are refused, named."""
    import zarr

    labels, ids = _two_folders(cohort, tmp_path)
    args = ["--task", "binary", "--target", "cancer", "--group", "patient_id", "--folds", "2", "--epochs", "2",
            "-q"]  # fmt: skip
    assert main(["mil", "train", str(cohort / "results"), "--labels", str(cohort / "cohort" / "labels.csv"),
                 *args, "-o", str(tmp_path / "one")]) == 0  # fmt: skip
    assert main(["mil", "train", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", str(tmp_path / "a.csv"),
                 "--labels", str(tmp_path / "b.csv"), *args, "-o", str(tmp_path / "two")]) == 0  # fmt: skip
    one = pd.read_csv(tmp_path / "one" / "oof_predictions.csv")
    two = pd.read_csv(tmp_path / "two" / "oof_predictions.csv")
    assert sorted(two.slide_id) == sorted(ids)
    pd.testing.assert_frame_equal(one, two)
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["run_folders"] == [str((tmp_path / d).resolve()) for d in ("a", "b")]
    assert metrics["labels"] == [str((tmp_path / f).resolve()) for f in ("a.csv", "b.csv")]
    assert metrics["slide_ids"] == sorted(ids)
    # Predicting one of the two folders with the model of both: it works, and says the slides were trained on.
    capsys.readouterr()
    assert main(["mil", "predict", str(tmp_path / "a"), "--model", str(tmp_path / "two"), "-o",
                 str(tmp_path / "pred")]) == 0  # fmt: skip
    assert sorted(pd.read_csv(tmp_path / "pred" / "predictions.csv").slide_id) == ids[: N_SLIDES // 2]
    assert (
        f"note: {N_SLIDES // 2} of the slides predicted were in the model's training set"
        in capsys.readouterr().out
    )
    # By content (metrics.json keeps each training slide's hash): a training slide renamed is named as trained
    # on; another cohort's slide that happens to reuse a training id is not.
    assert sorted(metrics["slide_sha256"]) == sorted(ids) and all(metrics["slide_sha256"].values())
    renamed, reused = tmp_path / "d" / "slides" / "renamed", tmp_path / "d" / "slides" / ids[0]
    shutil.copytree(cohort / "results" / "slides" / ids[1], renamed)
    _set_slide_id(renamed / "patches.zarr", "renamed")
    shutil.copytree(cohort / "results" / "slides" / ids[0], reused)
    group = zarr.open_group(reused / "patches.zarr", mode="r+")
    inputs = group.attrs["inputs"]
    group.attrs["inputs"] = {**inputs, "slide": {**inputs["slide"], "sha256": "0" * 32}}  # another slide's
    assert main(["mil", "predict", str(tmp_path / "d"), "--model", str(tmp_path / "two"), "-o",
                 str(tmp_path / "pred_c"), "-q"]) == 0  # fmt: skip
    assert "note: 1 of the slides predicted were in the model's training set" in (
        said := capsys.readouterr().out
    )
    assert "['renamed']" in said
    capsys.readouterr()
    # The same folder twice, as given or by another path to it.
    for twice in ([tmp_path / "a", tmp_path / "a"], [tmp_path / "a", tmp_path / "b" / ".." / "a"]):
        code = main(["mil", "train", *map(str, twice), "--labels", str(tmp_path / "a.csv"), *args,
                     "-o", str(tmp_path / "m")])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and f"run folder {twice[1]} given twice" in err and "more than one" not in err
    # An id in two folders.
    (tmp_path / "b" / "slides" / ids[0]).symlink_to(cohort / "results" / "slides" / ids[0])
    code = main(["mil", "train", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", str(tmp_path / "a.csv"),
                 *args, "-o", str(tmp_path / "m")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"{ids[0]} in {tmp_path / 'a'} and {tmp_path / 'b'}" in err
    assert "more than one run folder" in err and not (tmp_path / "m").exists()
    (tmp_path / "b" / "slides" / ids[0]).unlink()
    # Stacked tables must each have the columns: one lacking --group is refused by name (stacked, its slides
    # would all have been one patient "nan").
    labels[labels.slide_id.isin(ids[N_SLIDES // 2 :])].drop(columns="patient_id").to_csv(tmp_path / "b_no_group.csv",
                                                                                          index=False)  # fmt: skip
    code = main(["mil", "train", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", str(tmp_path / "a.csv"),
                 "--labels", str(tmp_path / "b_no_group.csv"), *args, "-o", str(tmp_path / "m")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'b_no_group.csv'}: no column(s) ['patient_id']" in err
    # A folder whose features come from another encoder.
    (tmp_path / "c" / "slides").mkdir(parents=True)
    for slide_id in ids[N_SLIDES // 2 :]:
        shutil.copytree(cohort / "results" / "slides" / slide_id, tmp_path / "c" / "slides" / slide_id)
    features = zarr.open_group(tmp_path / "c" / "slides" / ids[-1] / "patches.zarr", mode="r+")["features"]
    description = dict(features["stain_stats"].attrs["description"])
    features["stain_stats"].attrs["description"] = {**description, "encoder": "resnet50"}
    code = main(["mil", "train", str(tmp_path / "a"), str(tmp_path / "c"), "--labels", str(tmp_path / "a.csv"),
                 "--labels", str(tmp_path / "b.csv"), *args, "-o", str(tmp_path / "m")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "'resnet50'" in err and f"{ids[-1]} ({tmp_path / 'c' / 'slides' / ids[-1]})" in err
    features["stain_stats"].attrs["description"] = description
    # Tiles of another size (features of another resolution): refused, both folders named.
    group = zarr.open_group(tmp_path / "c" / "slides" / ids[-1] / "patches.zarr", mode="r+")
    group.attrs["tiling"] = {**group.attrs["tiling"], "size": 256}
    code = main(["mil", "train", str(tmp_path / "a"), str(tmp_path / "c"), "--labels", str(tmp_path / "a.csv"),
                 "--labels", str(tmp_path / "b.csv"), *args, "-o", str(tmp_path / "m")])  # fmt: skip
    err = capsys.readouterr().err
    assert (
        code == 2
        and "tiles of 128 px at 0.5 um/px" in err
        and f"{tmp_path / 'c' / 'slides' / ids[-1]} of 256 px" in err
    )
    assert not (tmp_path / "m").exists()


def test_store_ids_are_the_run_folder_names_and_only_a_swap_is_refused(cohort, tmp_path, capsys):
    """A slide's id is its folder's name under RESULTS/slides (what `run` named it); the store's slide_id
    attribute (the file's stem) may be missing, empty or another name: it trains under the folder's name. A
    store whose attribute is ANOTHER store's id in the set (folders swapped after `run`) is refused."""
    results = tmp_path / "results"
    shutil.copytree(cohort / "results", results, ignore=shutil.ignore_patterns("*.png", "*.geojson"))
    ids = sorted(p.name for p in (results / "slides").iterdir())
    _set_slide_id(results / "slides" / ids[0] / "patches.zarr", None)
    _set_slide_id(results / "slides" / ids[1] / "patches.zarr", "")
    _set_slide_id(results / "slides" / ids[2] / "patches.zarr", f" {ids[2]} ")  # a stem `run` normalised
    model = tmp_path / "model"
    code = main(["mil", "train", str(results), "--labels", str(cohort / "cohort" / "labels.csv"), "--task", "binary",
                 "--target", "cancer", "--folds", "2", "--epochs", "1", "-q", "-o", str(model)])  # fmt: skip
    assert code == 0
    assert sorted(pd.read_csv(model / "oof_predictions.csv", dtype={"slide_id": str}).slide_id) == ids
    _set_slide_id(results / "slides" / ids[3] / "patches.zarr", ids[4])  # swapped
    capsys.readouterr()
    code = main(["mil", "train", str(results), "--labels", str(cohort / "cohort" / "labels.csv"), "--task", "binary",
                 "--target", "cancer", "--folds", "2", "--epochs", "1", "-q", "-o", str(tmp_path / "m")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "renamed after `slidestream run`" in err and f"{ids[3]} holds {ids[4]}" in err
    assert not (tmp_path / "m").exists()


def test_refuses_to_overwrite_a_foreign_folder(cohort, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert _train(cohort, tmp_path / "mine", "binary", "cancer") == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_predict_failures_and_encoder_mismatch(cohort, tmp_path, capsys):
    import zarr

    # Two mutation targets, one tied to cancer, so every fold of this small cohort has positives of each.
    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    labels["mut_a"], labels["mut_b"] = labels.cancer, 1 - labels.cancer
    labels.to_csv(tmp_path / "labels.csv", index=False)
    model = tmp_path / "model"
    code = _train(cohort, model, "mutation", "mut_a", "mut_b", labels=tmp_path / "labels.csv", group=None)
    assert code == 0
    assert (model / "roc_mut_a.png").exists() and (model / "roc_mut_b.png").exists()
    results = tmp_path / "results"
    shutil.copytree(cohort / "results", results)
    del zarr.open_group(results / "slides" / "S002" / "patches.zarr", mode="r+")["features/stain_stats"]
    out = tmp_path / "out"
    assert main(["mil", "predict", str(results), "--model", str(model), "-o", str(out), "-q"]) == 1
    records = {
        r["slide_id"]: r for r in map(json.loads, (out / "predict_manifest.jsonl").read_text().splitlines())
    }
    assert records["S002"]["status"] == "failed" and "features/stain_stats" in records["S002"]["reason"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == N_SLIDES - 1 and "S002" not in set(predictions.slide_id)
    assert list(predictions.columns[:3]) == ["slide_id", "p_mut_a_mean", "p_mut_a_sd"]
    # A model whose encoder differs from the stores' is refused, both named.
    manifest = json.loads((model / "mil_model.json").read_text())
    manifest["encoder"]["encoder"] = "resnet50"
    (model / "mil_model.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert (
        main(["mil", "predict", str(results), "--model", str(model), "-o", str(tmp_path / "o2"), "-q"]) == 2
    )
    err = capsys.readouterr().err
    assert "'resnet50'" in err and "'stain_stats'" in err


def test_one_fold_is_a_train_validation_split(cohort, tmp_path):
    model = tmp_path / "split"
    extra = [
        "--folds",
        "1",
        "--model",
        "topk",
        "--model-arg",
        "top_k=2",
        "--model-arg",
        "embed_dim=8",
        "--lr",
        "3e-3",
    ]
    assert _train(cohort, model, "binary", "cancer", extra=extra) == 0
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["model"] == "topk" and metrics["model_kwargs"] == {"top_k": 2, "embed_dim": 8}
    assert json.loads((model / "plan.json").read_text())["config"]["lr"] == 3e-3
    (fold,) = metrics["per_fold"]
    assert metrics["folds"] == 1 and fold["n_train"] + fold["n_val"] == N_SLIDES and fold["n_val"] >= 1
    oof = pd.read_csv(model / "oof_predictions.csv")
    assert len(oof) == fold["n_val"] and set(oof.fold) == {0}  # the validation slides only
    assert json.loads((model / "mil_model.json").read_text())["folds"] == ["fold_0"]
    assert (model / "training_curves.png").exists() and (model / "roc_cancer.png").exists()
    out = tmp_path / "pred"
    assert main(["mil", "predict", str(cohort / "results"), "--model", str(model), "-o", str(out), "-q"]) == 0
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == N_SLIDES and (predictions.probability_sd == 0).all()  # one model: no spread
    # topk's per-tile scores are logits, not weights: the slide features weigh the tiles by their softmax, a
    # convex combination of the tiles' features.
    features = pd.read_csv(out / "slide_features.csv", dtype={"slide_id": str}).set_index("slide_id")
    for slide_id, row in features.iterrows():
        tiles = PatchStore.open(cohort / "results" / "slides" / slide_id / "patches.zarr").features(
            "stain_stats"
        )[:]
        assert tiles[:, 0].min() - 1e-3 <= row["stain_stats_0"] <= tiles[:, 0].max() + 1e-3


def test_model_arg_parses_values_as_toml_and_refuses_a_bad_key():
    import argparse

    from slidestream.commands._common import key_value
    from slidestream.commands.features import parse_encoder_args

    assert key_value("top_k=4") == ("top_k", 4) and key_value("gated=true") == ("gated", True)
    assert key_value("head=cox") == ("head", "cox") and key_value("dropout=0.5") == ("dropout", 0.5)
    assert key_value('head="cox"') == ("head", "cox") and key_value("dims=[1, 2]") == ("dims", [1, 2])
    assert key_value("lr=1e-5") == ("lr", 1e-5)
    assert parse_encoder_args(["top_k=4", 'head="cox"']) == dict(
        [key_value("top_k=4"), key_value('head="cox"')]
    )
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        key_value("top_k")
    with pytest.raises(ValueError, match="--encoder-arg"):
        parse_encoder_args(["top_k"])


def test_context_stats_without_context_is_an_error_not_ignored(tmp_path, capsys):
    from mil import SpatialContext

    base = ["mil", "train", str(tmp_path / "results"), "--labels", str(tmp_path / "labels.csv"), "--task",
            "binary", "--target", "cancer", "-o", str(tmp_path / "model")]  # fmt: skip
    assert main([*base, "--context-stats", "max"]) == 2  # checked before any file is read
    assert "need a context radius >= 1 (--context R)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--context", "1", "--context-stats", "median"])
    assert exit_.value.code == 2 and "one or more of mean, max" in capsys.readouterr().err
    assert SpatialContext.from_options(0) is None and SpatialContext.from_options(2) == SpatialContext(2)
    assert SpatialContext.from_options(1, "mean,max") == SpatialContext(1, ("mean", "max"))


def test_predict_step_of_a_run(cohort, cancer_model, tmp_path):
    import zarr

    from slidestream.discovery import SlideInput
    from slidestream.pipeline import load_config, process_slide

    results = tmp_path / "results"
    shutil.copytree(cohort / "results", results)
    del zarr.open_group(results / "slides" / "S001" / "patches.zarr", mode="r+")["features/stain_stats"]
    slides = cohort / "cohort" / "slides"
    config = load_config(
        out=results, steps=("predict",), progress=False, **{"predict.model": str(cancer_model)}
    )
    (record,) = process_slide(SlideInput("S000", slides / "S000.svs"), config)
    assert record.step == "predict" and record.status == "done", record.error
    assert 0 <= record.measurements["cancer_probability_mean"] <= 1
    assert "cancer_probability_sd" in record.measurements
    folder = results / "slides" / "S000"
    assert (folder / "heatmap_cancer.png").stat().st_size > 0 and (folder / "heatmap_cancer.geojson").exists()
    from tiling import PatchStore

    assert PatchStore.open(folder / "patches.zarr").scores("cancer").shape[1] == 4
    # The prediction lands in summary.csv (plug-in measurements after the fixed columns).
    from dataclasses import asdict

    from slidestream.pipeline import write_summary

    summary = pd.read_csv(write_summary(tmp_path / "summary.csv", [asdict(record)]))
    assert summary.loc[0, "cancer_probability_mean"] == pytest.approx(
        record.measurements["cancer_probability_mean"]
    )
    # A store without the model's features fails with the reason; so does a run without a model.
    (failed,) = process_slide(SlideInput("S001", slides / "S001.svs"), config)
    assert failed.status == "failed" and "features/stain_stats" in failed.error
    no_model = load_config(out=results, steps=("predict",), progress=False)
    (failed,) = process_slide(SlideInput("S000", slides / "S000.svs"), no_model)
    assert failed.status == "failed" and "--model" in failed.error


def test_run_with_a_model_adds_the_predict_step(cohort, cancer_model, tmp_path, capsys):
    slide = cohort / "cohort" / "slides" / "S000.svs"
    assert (
        main(["run", str(slide), "-o", str(tmp_path / "o"), "--model", str(cancer_model), "--dry-run"]) == 0
    )
    assert "steps: tile, features, predict" in capsys.readouterr().out
    toml = tmp_path / "run.toml"
    toml.write_text("[predict]\nhigh_fraction = 1.5\n")
    assert main(["run", str(slide), "-o", str(tmp_path / "o"), "--config", str(toml), "--dry-run"]) == 2
    assert "high_fraction must be between 0 and 1" in capsys.readouterr().err
    # A folder that is not a model is refused before any slide is worked on (exit 2, nothing written).
    out = tmp_path / "o2"
    assert main(["run", str(slide), "-o", str(out), "--model", str(tmp_path)]) == 2
    assert "not a MIL model folder" in capsys.readouterr().err
    assert not (out / "slides").exists()


def test_a_moved_slides_heatmap_is_drawn_on_its_stitch_image(synthetic_slide, tmp_path, monkeypatch):
    """thumbnail.png has a title band and a legend: the fallback background is stitch.png, on the slide's grid."""
    import shutil as sh

    from PIL import Image

    import tiling
    from slidestream.mil_slides import heatmap_png

    moved = tmp_path / "moved.svs"
    sh.copy(synthetic_slide.path, moved)
    store = tiling.tile_slide(moved, tmp_path / "alpha" / "patches.zarr", mpp=1.0, size=64)
    moved.unlink()  # the slide is gone: its own thumbnail cannot be read
    Image.new("RGB", (400, 300), (10, 10, 10)).save(
        tmp_path / "alpha" / "thumbnail.png"
    )  # with bands: not used
    Image.new("RGB", (320, 256), (200, 150, 200)).save(tmp_path / "alpha" / "stitch.png")
    shapes = []
    real = tiling.tile_heatmap
    monkeypatch.setattr(tiling, "tile_heatmap", lambda *a, **k: shapes.append(a[4]) or real(*a, **k))
    heatmap_png(
        tmp_path / "heat.png", store, tmp_path / "alpha", np.arange(len(store), dtype=float), "t", "v"
    )
    assert shapes == [(256, 320)] and (tmp_path / "heat.png").exists()


def test_a_model_folder_with_the_older_shared_scale_predicts_the_same(cohort, cancer_model, tmp_path):
    """Folders written before each fold kept its own scale hold one scale for all folds in mil_model.json."""
    from slidestream.mil_slides import load_model_folder, predict_store

    manifest = json.loads((cancer_model / "mil_model.json").read_text())
    shared = json.loads((cancer_model / "fold_0" / "config.json").read_text())["feature_scale"]
    slide = tmp_path / "results" / "S000"
    shutil.copytree(cohort / "results" / "slides" / "S000", slide)  # predict writes scores into the store
    rows = {}
    for name, in_checkpoints in (("old", False), ("new", True)):
        folder = tmp_path / name
        shutil.copytree(cancer_model, folder)
        for fold in manifest["folds"]:
            config = json.loads((folder / fold / "config.json").read_text())
            config["feature_scale"] = shared if in_checkpoints else None
            (folder / fold / "config.json").write_text(json.dumps(config))
        if not in_checkpoints:
            (folder / "mil_model.json").write_text(json.dumps({**manifest, "feature_scale": shared}))
        store = PatchStore.open(slide / "patches.zarr")
        rows[name] = predict_store(load_model_folder(folder), store, slide / "patches.zarr", "S000",
                                   tmp_path / f"{name}_out")[0]  # fmt: skip
    assert rows["old"]["probability_mean"] == pytest.approx(rows["new"]["probability_mean"], rel=1e-5)


def test_train_options_replace_planned_fields_and_bad_ones_stop_early(cohort, tmp_path, monkeypatch, capsys):
    import mil
    from mil.tasks import GRADE_LINKS
    from slidestream.cli import build_parser

    seen = []

    def spy(model, task, bags, n_splits=5, config="auto", **kwargs):
        seen.append(config)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(mil, "cross_validate", spy)
    # --epochs and --lr replace those fields of the plan (which keeps its batch size, max_tiles, class weights);
    # -q turns the epoch bars off with or without them.
    assert _train(cohort, tmp_path / "m", "binary", "cancer", extra=["--lr", "0.001"]) == 2
    assert seen.pop() == {"lr": 0.001, "epochs": 3, "patience": 1, "progress": False}
    code = main(["mil", "train", str(cohort / "results"), "--labels", str(cohort / "cohort" / "labels.csv"),
                 "--task", "binary", "--target", "cancer", "-o", str(tmp_path / "m"), "-q"])  # fmt: skip
    assert code == 2 and seen.pop() == {"progress": False}
    # An unknown model keyword is a usage error before any store is read, not a TypeError traceback.
    capsys.readouterr()
    assert _train(cohort, tmp_path / "m", "binary", "cancer", extra=["--model-arg", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "--model-arg" in err and "bogus" in err and not seen
    # --grade-link offers exactly the task's links.
    mil_parser = build_parser()._subparsers._group_actions[0].choices["mil"]
    train = mil_parser._subparsers._group_actions[0].choices["train"]
    link = next(a for a in train._actions if a.dest == "grade_link")
    assert set(link.choices) == set(GRADE_LINKS)
    with pytest.raises(SystemExit) as exc:
        _train(cohort, tmp_path / "m", "grade", "grade", extra=["--grade-link", "probit"])
    assert exc.value.code == 2


def test_context_is_saved_with_the_model_and_applied_by_predict(cohort, tmp_path, capsys):
    import torch

    from mil import SpatialContext, load_model, read_bag
    from slidestream.mil_slides import load_model_folder

    model = tmp_path / "context"
    extra = ["--context", "1", "--context-stats", "mean,max", "--model", "topk", "--model-arg", "embed_dim=8"]
    assert _train(cohort, model, "binary", "cancer", extra=extra) == 0
    context = SpatialContext(1, ("mean", "max"))
    assert json.loads((model / "mil_model.json").read_text())["context"] == context.to_dict()
    checkpoint = load_model(model / "fold_0")
    assert checkpoint.context == context and checkpoint.model.in_dim == 3 * 53
    # predict reads the context from the folder (the user does not repeat it): the same scores as the fold
    # models give on the widened bags.
    out = tmp_path / "pred"
    assert main(["mil", "predict", str(cohort / "results"), "--model", str(model), "-o", str(out), "-q"]) == 0
    predictions = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str}).set_index("slide_id")
    loaded = load_model_folder(model)
    store = PatchStore.open(cohort / "results" / "slides" / "S000" / "patches.zarr")
    bag = read_bag(store, "stain_stats", loaded.context)
    assert bag.shape == (len(store), 3 * 53)
    with torch.no_grad():
        expected = np.mean([c.task.predict(c.model(torch.from_numpy(bag)[None]).logits.numpy())
                            for c in loaded.checkpoints])  # fmt: skip
    assert np.isclose(predictions.loc["S000", "probability_mean"], expected, atol=1e-5)
    # The context is the fold checkpoints': the manifest's copy must agree, and so must the folds.
    manifest = json.loads((model / "mil_model.json").read_text())
    (model / "mil_model.json").write_text(
        json.dumps({**manifest, "context": {"radius": 2, "stats": ["mean"]}})
    )
    capsys.readouterr()
    assert main(["mil", "predict", str(cohort / "results"), "--model", str(model), "-o", str(tmp_path / "p2"),
                 "-q"]) == 2  # fmt: skip
    assert "differs from the fold checkpoints'" in capsys.readouterr().err
    del manifest["context"]  # a manifest without the copy: the checkpoints' context still applies
    (model / "mil_model.json").write_text(json.dumps(manifest))
    assert load_model_folder(model).context == context
    config = json.loads((model / "fold_1" / "config.json").read_text())
    (model / "fold_1" / "config.json").write_text(json.dumps({**config, "context": None}))
    assert main(["mil", "predict", str(cohort / "results"), "--model", str(model), "-o", str(tmp_path / "p3"),
                 "-q"]) == 2  # fmt: skip
    assert "fold checkpoints disagree on the spatial context" in capsys.readouterr().err


def test_a_model_folder_without_any_context_record_predicts_on_plain_features(cohort, cancer_model, tmp_path):
    """Folders written before `--context` have no "context" in mil_model.json nor in any fold's config.json."""
    folder = tmp_path / "old"
    shutil.copytree(cancer_model, folder)
    manifest = json.loads((folder / "mil_model.json").read_text())
    assert manifest.pop("context") is None
    (folder / "mil_model.json").write_text(json.dumps(manifest))
    for fold in manifest["folds"]:
        config = json.loads((folder / fold / "config.json").read_text())
        assert config.pop("context") is None
        (folder / fold / "config.json").write_text(json.dumps(config))
    out = tmp_path / "pred"
    assert (
        main(["mil", "predict", str(cohort / "results"), "--model", str(folder), "-o", str(out), "-q"]) == 0
    )
    assert len(pd.read_csv(out / "predictions.csv")) == N_SLIDES


def test_mutation_with_an_auxiliary_target_keeps_slides_missing_some_targets(cohort, tmp_path):
    # mut_a known on cancer slides only (as in the cohorts), cancer on all: every slide trains (masked loss).
    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    cancer = labels.cancer == 1
    labels["mut_a"] = np.where(cancer, (np.cumsum(cancer) % 2).astype(float), np.nan)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    model = tmp_path / "model"
    code = _train(
        cohort, model, "mutation", "cancer", "mut_a", labels=tmp_path / "labels.csv", group=None, epochs=2
    )
    assert code == 0
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["n_slides"] == N_SLIDES and metrics["left_out"] == []
    oof = pd.read_csv(model / "oof_predictions.csv", dtype={"slide_id": str}).set_index("slide_id")
    assert oof["true_mut_a"].isna().sum() == (~cancer).sum() and oof["p_mut_a"].notna().all()
    # One missing target is masked; a slide with none is left out, listed.
    labels.loc[~cancer, "cancer"] = np.nan
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert _train(cohort, tmp_path / "m2", "mutation", "cancer", "mut_a", labels=tmp_path / "labels.csv",
                  group=None, folds=1, epochs=1) == 0  # fmt: skip
    assert json.loads((tmp_path / "m2" / "metrics.json").read_text())["left_out"] == sorted(
        labels.slide_id[~cancer]
    )


def test_mutation_read_from_the_tumour_tiles_of_a_cancer_model(cohort, cancer_model, tmp_path, capsys):
    """`mil train --tumour-model`: the cancer model's top tiles pooled, a logistic read-out per target; the
    folder keeps a copy of the cancer model and `mil predict` applies both."""
    import torch

    from mil import read_bag
    from mil.tumour_pool import pool_tumour_tiles
    from slidestream.mil_slides import load_model_folder

    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    cancer = labels.cancer == 1
    labels["mut_a"] = np.where(cancer, (np.cumsum(cancer) % 2).astype(float), np.nan)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    results, model = str(cohort / "results"), tmp_path / "pooled"
    train = ["mil", "train", results, "--labels", str(tmp_path / "labels.csv"), "--task", "mutation",
             "--target", "mut_a", "--folds", "2", "-q"]  # fmt: skip
    pooled = [*train, "--tumour-model", str(cancer_model), "--tumour-fraction", "0.2", "-o", str(model)]
    assert main(pooled) == 0
    manifest = json.loads((model / "mil_model.json").read_text())
    assert manifest["readout"] == "tumour_pool" and manifest["tumour_pool"]["fraction"] == 0.2
    assert (model / "tumour_model" / "mil_model.json").is_file() and (model / "roc_mut_a.png").is_file()
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["left_out"] == sorted(labels.slide_id[~cancer])  # no mutation value: left out
    oof = pd.read_csv(model / "oof_predictions.csv", dtype={"slide_id": str})
    assert sorted(oof.slide_id) == sorted(labels.slide_id[cancer]) and oof["p_mut_a"].between(0, 1).all()
    pooled = roc_auc_score(oof["true_mut_a"], oof["p_mut_a"])
    assert metrics["summary"]["auc_mut_a"]["pooled"] == pytest.approx(pooled)
    out = tmp_path / "pred"
    assert main(["mil", "predict", results, "--model", str(model), "-o", str(out), "-q"]) == 0
    predictions = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str}).set_index("slide_id")
    assert (
        list(predictions.columns) == ["p_mut_a_mean", "p_mut_a_sd", "tiles"] and len(predictions) == N_SLIDES
    )
    # The same as by hand: the cancer folds' mean tile scores pick the top 20% of tiles, each fold's read-out
    # predicts from their mean (context-widened) features; the store's scores are those tumour scores.
    loaded = load_model_folder(model)
    path = cohort / "results" / "slides" / "S000" / "patches.zarr"
    store = PatchStore.open(path)
    bag = read_bag(store, loaded.feature, loaded.context)
    with torch.no_grad():
        tiles = np.mean([c.model(torch.from_numpy(bag)[None]).instance_scores[0, :, 0].numpy()
                         for c in loaded.checkpoints], axis=0)  # fmt: skip
    vector = pool_tumour_tiles(bag, tiles, 0.2)[None]
    expected = np.mean([r.predict_proba(vector)[0, 0] for r in loaded.readouts])
    assert np.isclose(predictions.loc["S000", "p_mut_a_mean"], expected, atol=1e-5)
    assert np.allclose(store.scores("pooled")[:, 0], tiles, atol=1e-5)
    # Options that would be ignored, a task it cannot read, a pooled model or a model of another task than
    # binary or mutation as the tumour model (a grade model's first tile score is no tumour score): errors.
    graded = tmp_path / "graded"
    shutil.copytree(cancer_model, graded)
    (graded / "mil_model.json").write_text(json.dumps({**json.loads((graded / "mil_model.json").read_text()),
                                                       "task": "grade"}))  # fmt: skip
    capsys.readouterr()
    for extra, message in ((["--tumour-model", str(cancer_model), "--context", "1"], "--context: not with"),
                           (["--tumour-fraction", "0.2"], "--tumour-fraction needs --tumour-model"),
                           (["--tumour-model", str(model)], "is itself a tumour-pooled model"),
                           (["--tumour-model", str(cancer_model), "--tumour-fraction", "0"], "must be in (0, 1]"),
                           (["--tumour-model", str(graded)], "is a grade model; a tumour model is a binary or "
                                                             "mutation model")):  # fmt: skip
        assert main([*train, *extra, "-o", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
    # Target values other than 0/1 or empty (text, a 2) are refused naming the columns, before any scoring.
    for column, value in (("mut_a", "yes"), ("mut_b", 2)):
        odd = labels.assign(mut_b=labels.mut_a).astype({column: object})
        odd.loc[odd.index[cancer][0], column] = value
        odd.to_csv(tmp_path / "odd.csv", index=False)
        bad = [*train[:4], str(tmp_path / "odd.csv"), *train[5:8], "mut_a", "mut_b", *train[9:]]
        assert main([*bad, "--tumour-model", str(cancer_model), "-o", str(tmp_path / "bad")]) == 2
        assert f"must be 0/1 (or empty); column(s) ['{column}'] hold other values" in capsys.readouterr().err
    binary = ["mil", "train", results, "--labels", str(cohort / "cohort" / "labels.csv"), "--task", "binary",
              "--target", "cancer", "--tumour-model", str(cancer_model), "-o", str(tmp_path / "bad"), "-q"]  # fmt: skip
    assert main(binary) == 2 and "needs --task mutation" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_tumour_pooled_on_several_run_folders_and_tables(cohort, cancer_model, tmp_path, capsys):
    """`mil train A B --labels a.csv --labels b.csv --tumour-model`: the same model as on one folder and one
    table; errors name the tables as given; a folder without stores among several is refused by name."""
    labels, ids = _two_folders(cohort, tmp_path)
    cancer = labels.cancer == 1
    labels["mut_a"] = np.where(cancer, (np.cumsum(cancer) % 2).astype(float), np.nan)
    labels.to_csv(tmp_path / "all.csv", index=False)
    for name, part in (("a", ids[: N_SLIDES // 2]), ("b", ids[N_SLIDES // 2 :])):
        labels[labels.slide_id.isin(part)].to_csv(tmp_path / f"{name}.csv", index=False)
    rest = [
        "--task",
        "mutation",
        "--target",
        "mut_a",
        "--folds",
        "2",
        "--tumour-model",
        str(cancer_model),
        "-q",
    ]
    two = ["mil", "train", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", str(tmp_path / "a.csv"),
           "--labels", str(tmp_path / "b.csv"), *rest]  # fmt: skip
    assert main([*two, "-o", str(tmp_path / "two")]) == 0
    assert main(["mil", "train", str(cohort / "results"), "--labels", str(tmp_path / "all.csv"), *rest,
                 "-o", str(tmp_path / "one")]) == 0  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "one" / "oof_predictions.csv"),
                                  pd.read_csv(tmp_path / "two" / "oof_predictions.csv"))  # fmt: skip
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["run_folders"] == [str((tmp_path / d).resolve()) for d in ("a", "b")]
    assert metrics["slide_ids"] == sorted(labels.slide_id[cancer])
    capsys.readouterr()
    odd = pd.read_csv(tmp_path / "b.csv", dtype={"slide_id": str}).astype({"mut_a": object})
    odd.loc[odd.mut_a.notna().idxmax(), "mut_a"] = "yes"
    odd.to_csv(tmp_path / "b.csv", index=False)
    assert main([*two, "-o", str(tmp_path / "bad")]) == 2
    assert (
        f"{tmp_path / 'a.csv'} + {tmp_path / 'b.csv'}: tumour-pooled targets must be 0/1"
        in capsys.readouterr().err
    )
    (tmp_path / "empty").mkdir()
    assert main([*two[:4], str(tmp_path / "empty"), *two[4:], "-o", str(tmp_path / "bad")]) == 2
    assert f"no patch stores under {tmp_path / 'empty'}/slides" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_tumour_pooled_model_predicts_from_its_copy_of_an_older_cancer_folder(
    cohort, cancer_model, tmp_path
):
    """The pooled model keeps the cancer model it was trained with: `mil predict` works once the original is
    gone, pools the tiles training pooled (an older cancer folder's shared feature scale, in its mil_model.json,
    applied as training applied it), and its "High attention" tiles are the pooled ones to a tile."""
    import torch

    from mil import read_bag
    from mil.tumour_pool import pool_tumour_tiles, top_tiles
    from slidestream.mil_slides import load_model_folder, predict_store

    older = tmp_path / "cancer_older"
    shutil.copytree(cancer_model, older)
    manifest = json.loads((older / "mil_model.json").read_text())
    shared = json.loads((older / "fold_0" / "config.json").read_text())["feature_scale"]
    for fold in manifest["folds"]:
        config = json.loads((older / fold / "config.json").read_text())
        (older / fold / "config.json").write_text(json.dumps({**config, "feature_scale": None}))
    (older / "mil_model.json").write_text(json.dumps({**manifest, "feature_scale": shared}))
    labels = pd.read_csv(cohort / "cohort" / "labels.csv", dtype={"slide_id": str})
    cancer = labels.cancer == 1
    labels["mut_a"] = np.where(cancer, (np.cumsum(cancer) % 2).astype(float), np.nan)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    model = tmp_path / "pooled"
    assert main(["mil", "train", str(cohort / "results"), "--labels", str(tmp_path / "labels.csv"), "--task",
                 "mutation", "--target", "mut_a", "--folds", "2", "--tumour-model", str(older),
                 "--tumour-fraction", "0.2", "-o", str(model), "-q"]) == 0  # fmt: skip
    slide = next(s for s in labels.slide_id[cancer])
    store = PatchStore.open(cohort / "results" / "slides" / slide / "patches.zarr")
    tumour = load_model_folder(older)  # as training loaded it, before the original goes
    bag = read_bag(store, tumour.feature, tumour.context)
    with torch.no_grad():
        tiles = np.mean([c.model(torch.from_numpy(bag)[None]).instance_scores[0, :, 0].numpy()
                         for c in tumour.checkpoints], axis=0)  # fmt: skip
    shutil.rmtree(older)
    loaded = load_model_folder(model)
    vector = pool_tumour_tiles(bag, tiles, 0.2)[None]
    expected = np.mean([r.predict_proba(vector)[0, 0] for r in loaded.readouts])
    copy = tmp_path / "results" / slide
    shutil.copytree(cohort / "results" / "slides" / slide, copy)  # predict writes scores into the store
    n = len(store)
    k = int(np.ceil(0.2 * n))
    high_fraction = (k + 1e-10) / n  # a hair above k tiles: "rank > 1 - fraction" would flag k + 1
    row, features = predict_store(loaded, PatchStore.open(copy / "patches.zarr"), copy / "patches.zarr", slide,
                                  tmp_path / "out", high_fraction=high_fraction)  # fmt: skip
    assert row["p_mut_a_mean"] == pytest.approx(expected, abs=1e-5)
    scores = PatchStore.open(copy / "patches.zarr").scores("pooled")
    assert np.allclose(scores[:, 0], tiles, atol=1e-5)
    flagged = np.flatnonzero(scores[:, 3] == 1)
    assert sorted(flagged) == sorted(top_tiles(tiles, 0.2)) and len(flagged) == k
    assert features["high_attention_fraction"] == pytest.approx(k / n)


def test_tumour_pooled_folds_spread_the_positives_of_every_target(cancer_model, tmp_path):
    """Folds stratified as `MutationTask.strata` (each slide's rarest positive target), not on the first target
    only: three mut_b positives among twelve slides land one in each of three test folds."""
    from mil.tumour_pool import TumourPoolConfig
    from slidestream.mil_pooled import PooledSlides, fit_tumour_pooled
    from slidestream.mil_slides import load_model_folder

    rng = np.random.default_rng(0)
    ids = [f"S{i:02d}" for i in range(12)]
    y = np.column_stack([np.tile([1.0, 0.0], 6), np.isin(np.arange(12), [0, 1, 4]).astype(float)])
    slides = PooledSlides(load_model_folder(cancer_model), cancer_model, ["mut_a", "mut_b"], None,
                          TumourPoolConfig(), pd.DataFrame(index=pd.Index(ids, name="slide_id")),
                          rng.normal(size=(12, 5)) + y @ np.ones((2, 5)), y, [], [])  # fmt: skip
    result = fit_tumour_pooled(slides, tmp_path / "m", folds=3)
    assert np.isfinite(result.folds["auc_mut_b"]).all() and np.isfinite(result.folds["auc_mut_a"]).all()
    oof = pd.read_csv(tmp_path / "m" / "oof_predictions.csv")
    assert (oof.groupby("fold")["true_mut_b"].sum() == 1).all()
    # A fold without a positive of some target is refused (as `mil train` refuses it), not a NaN AUC.
    with pytest.raises(ValueError, match=r"fold \d of 4 has no positive slide for target\(s\) \['mut_b'\]"):
        fit_tumour_pooled(slides, tmp_path / "m4", folds=4)


def test_benchmark_refuses_bad_inputs_once_before_training(cohort, tmp_path, capsys, monkeypatch):
    """benchmarks/mil_slides.py checks its training inputs once: an id in two folders is one usage error, not
    retried at fewer folds per task (each time re-opening every store) and then silently dropped."""
    import benchmarks.mil_slides as bench

    _, ids = _two_folders(cohort, tmp_path)
    (tmp_path / "b" / "slides" / ids[0]).symlink_to(cohort / "results" / "slides" / ids[0])
    monkeypatch.setattr(bench, "train_slides", lambda *a, **k: pytest.fail("trained despite bad inputs"))
    labels = str(cohort / "cohort" / "labels.csv")
    with pytest.raises(SystemExit) as exited:
        bench.main(["--train-results", str(tmp_path / "a"), str(tmp_path / "b"), "--train-labels", labels,
                    "--test-results", str(cohort / "results"), "--test-labels", labels, "--test-slides",
                    str(cohort / "cohort" / "slides"), "-o", str(tmp_path / "out"), "--tasks", "cancer,grade"])  # fmt: skip
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "more than one run folder" in err and f"{ids[0]} in" in err
