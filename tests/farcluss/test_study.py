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
        for name, config in ss.ablation_configs().items():
            # each part adds part_gain: parts removed or added one by one change mIoU by that much
            n_parts = sum(getattr(config, p) for p in ss.PARTS)
            rows.append({"table": "ablation", "name": name, "fraction": 0.0625, "split": "1_16", "seed": seed,
                         "miou": 0.5 + part_gain * n_parts + 0.001 * seed, "miou_tail": 0.2,
                         "boundary_miou": 0.3, "iou/a": 0.5})
    return study.ExperimentResults(pd.DataFrame(rows), pd.DataFrame())


def _costs(proto_pct: float, pair_pct: float, proto_mb: float = 0.1, pair_mb: float = 3.0) -> pd.DataFrame:
    """A cost table as study.cost_table returns it (supervised median 100 ms, so ms = % of supervised)."""
    rows = [("supervised", 100.0, 5.0, None), ("hard threshold (FixMatch-style)", 200.0, 9.0, None),
            ("FARCLUSS without contrast", 200.0, 9.0, None),
            ("FARCLUSS (prototype contrast)", 200.0 + proto_pct, 9.0 + proto_mb, proto_pct),
            ("FARCLUSS with pairwise contrast", 200.0 + pair_pct, 9.0 + pair_mb, pair_pct)]
    return pd.DataFrame([
        {"method": m, "ms_per_iteration": ms - 3, "ms_median": ms, "vs supervised": ms / 100, "saved_activation_mb": mb,
         "contrast extra ms": extra if extra is not None else np.nan,
         "contrast extra (% of supervised)": extra if extra is not None else np.nan,
         "contrast_pixels": 512 if extra is not None else 0, "rounds": 30}
        for m, ms, mb, extra in rows])


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
    remove_only = labkit.configure("farcluss", "smoke", {"ablation": "remove_only"})
    assert not any(n.startswith("+ ") for t, n, f, c in study.run_plan(remove_only))
    none = labkit.configure("farcluss", "smoke", {"ablation": "none"})
    assert {t for t, n, f, c in study.run_plan(none)} == {"main"}


def test_default_preset_covers_every_fraction_and_the_full_ablation():
    default = labkit.configure("farcluss", "default", {})
    plan = study.run_plan(default)
    assert sorted({f for t, n, f, c in plan if t == "main"}) == [0.0625, 0.125, 0.25, 0.5]
    names = {n for t, n, f, c in plan if t == "ablation"}
    assert set(ss.ablation_configs()) == names and len(default.seeds) >= 3


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


def test_cost_claim_uses_the_in_round_overhead_and_memory(cfg):
    runs = _runs(0.05, 0.1, 0.02)
    assert _status(study.evaluate_claims(cfg, runs, _costs(9.5, 40)), "prototype_contrast_cheap") == "held"
    assert _status(study.evaluate_claims(cfg, runs, _costs(10.5, 40)), "prototype_contrast_cheap") == "did not hold"
    # cheaper in time but not in memory than pairwise: not held
    memory = _costs(5, 40, proto_mb=4.0, pair_mb=3.0)
    assert _status(study.evaluate_claims(cfg, runs, memory), "prototype_contrast_cheap") == "did not hold"
    o = study.contrast_overhead(_costs(7, 40))
    assert o["prototype_extra_pct_of_supervised"] == 7 and o["pairwise_extra_ms"] == 40 and o["rounds"] == 30


def test_part_claim_needs_significant_removals_and_gains_when_added(cfg):
    runs = _runs(0.05, 0.1, 0.02)
    abl = runs.runs.table == "ablation"
    # the removals still cost 2 pp, but adding uncertainty to fuzzy does not help: not held
    plus_u = abl & (runs.runs.name == "+ fuzzy + uncertainty")
    runs.runs.loc[plus_u, "miou"] -= 0.03
    claim = next(c for c in study.evaluate_claims(cfg, runs, None) if c["id"] == "each_part_contributes")
    assert claim["status"] == "did not hold" and "adding uncertainty" in claim["reason"]
    # a removal that loses 0.5 pp on average but not on every seed (CI reaches below 0): not held
    noisy = _runs(0.05, 0.1, 0.02)
    rows = (noisy.runs.table == "ablation") & (noisy.runs.name == "without rebalance")
    noisy.runs.loc[rows, "miou"] += np.array([0.025, -0.01, 0.0])
    claim = next(c for c in study.evaluate_claims(cfg, noisy, None) if c["id"] == "each_part_contributes")
    assert claim["status"] == "did not hold" and "removing rebalance" in claim["reason"]
    # without the add-one-by-one rows only removals are judged, and the reason says so
    removals = _runs(0.05, 0.1, 0.02)
    removals.runs = removals.runs[~removals.runs.name.str.startswith("+ ")]
    claim = next(c for c in study.evaluate_claims(cfg, removals, None) if c["id"] == "each_part_contributes")
    assert claim["status"] == "held" and "only removals" in claim["reason"]


def test_tail_claim_reports_when_no_method_segments_the_tail(cfg):
    runs = _runs(0.05, 0.1, 0.02)
    runs.runs["miou_tail"] = 0.0
    claim = next(c for c in study.evaluate_claims(cfg, runs, None) if c["id"] == "largest_gains_tail_and_boundaries")
    assert claim["status"] == "did not hold" and "tail IoU 0 throughout" in claim["reason"]
    runs.runs["miou_tail"] = np.nan  # no class under the tail threshold
    claim = next(c for c in study.evaluate_claims(cfg, runs, None) if c["id"] == "largest_gains_tail_and_boundaries")
    assert claim["status"] == "not evaluated"


def test_cost_table_measures_every_method_and_the_contrast_overhead():
    cfg = labkit.configure("farcluss", "smoke", {"n_train_images": 8, "n_val_images": 2, "decoder_channels": 8})
    data = study.load_data(cfg)
    costs = study.cost_table(cfg, data, repeats=2, batch_size=2)
    assert list(costs.method) == ["supervised", "hard threshold (FixMatch-style)", "FARCLUSS without contrast",
                                  "FARCLUSS (prototype contrast)", "FARCLUSS with pairwise contrast"]
    c = costs.set_index("method")
    assert c.loc["supervised", "vs supervised"] == 1.0 and (c["rounds"] == 2).all()
    assert np.isfinite(c.loc["FARCLUSS (prototype contrast)", "contrast extra ms"])
    assert np.isnan(c.loc["supervised", "contrast extra ms"])
    # the pairwise contrast keeps an N x N similarity matrix for backward
    assert c.loc["FARCLUSS with pairwise contrast", "saved_activation_mb"] > c.loc[
        "FARCLUSS (prototype contrast)", "saved_activation_mb"] > c.loc["FARCLUSS without contrast", "saved_activation_mb"]
    assert c.loc["FARCLUSS (prototype contrast)", "contrast_pixels"] == 2 * 2 * 8 * 8


def test_a_split_without_some_class_is_warned_and_listed(tmp_path):
    from labkit.data import scenes as sc

    cfg = labkit.configure("farcluss", "smoke", {"fractions": [1 / 32], "ablation": "none", "iterations": 1,
                                                 "warmup_iterations": 1, "decoder_channels": 8})
    data = study.load_data(cfg)
    labeled, _ = sc.sample_labeled_split(data.train.ids, 1 / 32, 0)
    li = [data.train.ids.index(i) for i in labeled]
    present = set(np.unique(data.train.masks[li]).tolist())
    expected = [c for i, c in enumerate(data.class_names) if i not in present]
    assert expected, "the fixture split must miss a class for this test to mean anything"
    with pytest.warns(sc.SplitCoverageWarning):
        results = study.run_experiments(cfg, data, split_dir=tmp_path, progress=False)
    assert results.splits.classes_without_labels.iloc[0] == ", ".join(expected)
    assert sc.read_split_list(tmp_path / "1_32" / "seed0" / "labeled.txt", data.train.ids) == labeled
