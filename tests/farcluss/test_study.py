"""Study glue: the run plan, the tables and claim statuses computed from (synthetic) runs."""

import numpy as np
import pandas as pd
import pytest

import labkit
from labkit.methods import semisup as ss
from labkit.studies import farcluss as study


@pytest.fixture
def cfg():
    return labkit.configure("farcluss", "smoke", {"seeds": [0, 1, 2], "fractions": [0.0625, 0.25]})


def _runs(gain_main: float, gain_tail: float, part_gain: float) -> study.ExperimentResults:
    rng = np.random.default_rng(0)
    rows = []
    for fraction, split in ((0.0625, "1_16"), (0.25, "1_4")):
        for seed in range(3):
            base = 0.5 + 0.01 * rng.standard_normal()
            for name, g in (("supervised", 0.0), ("fixmatch", gain_main / 2), ("farcluss", gain_main)):
                rows.append({"table": "main", "name": name, "fraction": fraction, "split": split, "seed": seed,
                             "miou": base + g + 0.001 * seed, "miou_head": base + g / 2, "miou_body": base + g,
                             "miou_tail": 0.2 + g + gain_tail * (name == "farcluss"),
                             "boundary_miou": 0.3 + 2 * g, "iou/a": base})
    for seed in range(3):
        for name in ss.ablation_configs():
            full = name == "FARCLUSS (all parts)"
            rows.append({"table": "ablation", "name": name, "fraction": 0.0625, "split": "1_16", "seed": seed,
                         "miou": 0.5 + (part_gain if full else 0.0) + 0.001 * seed, "miou_tail": 0.2,
                         "boundary_miou": 0.3, "iou/a": 0.5})
    return study.ExperimentResults(pd.DataFrame(rows), pd.DataFrame())


def _costs(proto_ms: float, pair_ms: float) -> pd.DataFrame:
    return pd.DataFrame([
        {"method": "supervised", "ms_per_iteration": 100.0, "saved_activation_mb": 5.0, "contrast_pixels": 0},
        {"method": "FARCLUSS without contrast", "ms_per_iteration": 200.0, "saved_activation_mb": 9.0,
         "contrast_pixels": 0},
        {"method": "FARCLUSS (prototype contrast)", "ms_per_iteration": 200.0 + proto_ms,
         "saved_activation_mb": 9.1, "contrast_pixels": 512},
        {"method": "FARCLUSS with pairwise contrast", "ms_per_iteration": 200.0 + pair_ms,
         "saved_activation_mb": 12.0, "contrast_pixels": 512},
    ])


def _status(claims, claim_id):
    return next(c["status"] for c in claims if c["id"] == claim_id)


def test_claims_hold_when_the_runs_show_the_effects(cfg):
    claims = study.evaluate_claims(cfg, _runs(0.05, 0.1, 0.02), _costs(5, 80))
    assert {c["id"]: c["status"] for c in claims} == {
        "beats_baselines_every_fraction": "held", "largest_gains_tail_and_boundaries": "held",
        "each_part_contributes": "held", "prototype_contrast_cheap": "held"}


def test_claims_do_not_hold_when_the_runs_do_not_show_them(cfg):
    claims = study.evaluate_claims(cfg, _runs(-0.02, -0.1, -0.01), _costs(30, 20))
    assert all(c["status"] == "did not hold" for c in claims)
    assert "fractions 1_8, 1_2 not run" in claims[0]["reason"]


def test_single_seed_leaves_the_main_claim_not_evaluated():
    cfg1 = labkit.configure("farcluss", "smoke", {"seeds": [0]})
    results = _runs(0.05, 0.1, 0.02)
    results.runs = results.runs[results.runs.seed == 0]
    assert _status(study.evaluate_claims(cfg1, results, None), "beats_baselines_every_fraction") == "not evaluated"
    assert _status(study.evaluate_claims(cfg1, results, None), "prototype_contrast_cheap") == "not evaluated"


def test_tables_name_their_rows(cfg):
    results = _runs(0.05, 0.1, 0.02)
    main = study.main_table(results)
    assert list(main.iloc[:, 0]) == [study.METHOD_LABELS[m] for m in study.MAIN_METHODS]
    assert list(main.columns[1:]) == ["1_16", "1_4"]
    abl = study.ablation_table(results)
    assert "without prototype" in set(abl.iloc[:, 0])


def test_run_plan_shares_identical_configs(cfg):
    plan = study.run_plan(cfg)
    keys = {study._behaviour_key(c) for t, n, f, c in plan if f == cfg.ablation_fraction}
    # the full ablation's 9 rows are 8 distinct trainings ("without prototype" = "+ fuzzy + uncertainty + rebalance")
    assert len(keys) == 8
    shared = labkit.configure("farcluss", "smoke", {})  # main fraction = ablation fraction: main rows reuse them
    assert len({study._behaviour_key(c) for t, n, f, c in study.run_plan(shared)}) == 9
    default = labkit.configure("farcluss", "default", {})
    assert not any(n.startswith("+ ") for t, n, f, c in study.run_plan(default))


def test_voc_data_source_loads_a_local_tree_and_evaluates_by_sliding_window(tmp_path):
    from tests.farcluss.test_data import _voc_tree

    ids, _ = _voc_tree(tmp_path, n=4, size=(20, 20))
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[:2]) + "\n")
    cfg = labkit.configure("farcluss", "smoke", {"data_source": "voc", "data_root": str(tmp_path),
                                                 "image_size": 16, "n_train_images": 4, "n_val_images": 2})
    data = study.load_data(cfg)
    assert data.num_classes == 21 and data.train.images.shape == (4, 3, 16, 16)
    assert data.val.images.shape == (2, 3, 32, 32) and data.tile == 16
    assert (data.val.masks[:, 20:, :] == 255).all()  # padding is ignored, not scored
    model = study._build_model(cfg, data).eval()
    assert ss.predict(model, data.val.images, tile=data.tile).shape == (2, 32, 32)


def test_voc_data_source_without_root_is_an_error():
    from labkit.core.errors import ParameterError

    with pytest.raises(ParameterError, match="data_root"):
        study.load_data(labkit.configure("farcluss", "smoke", {"data_source": "voc"}))
