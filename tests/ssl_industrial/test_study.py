import numpy as np
import pandas as pd
import pytest

import labkit
from labkit.studies import ssl_industrial as study


def _cfg(**over):
    return labkit.configure("ssl_industrial", "default", over)


def _le(gaps_small, gaps_large, unrelated_gap=0.05):
    rows = []
    for seed in (0, 1, 2):
        for n, gap in ((8, gaps_small), (32, (gaps_small + gaps_large) / 2), (128, gaps_large)):
            base = 0.5 + 0.01 * seed
            rows += [{"init": "scratch", "n_labels": n, "seed": seed, "miou": base, "defect_f1": 0.1},
                     {"init": "mae", "n_labels": n, "seed": seed, "miou": base + gap + 0.002 * seed, "defect_f1": 0.2},
                     {"init": "simclr", "n_labels": n, "seed": seed, "miou": base, "defect_f1": 0.1}]
            if n == 8:
                rows.append({"init": "mae_unrelated", "n_labels": n, "seed": seed,
                             "miou": base + gap - unrelated_gap + 0.001 * seed, "defect_f1": 0.15})
    return pd.DataFrame(rows)


def test_claim1_held_when_gap_is_positive_and_narrows():
    c = study.claim_label_efficiency(_cfg(), _le(0.1, 0.02))
    assert c["status"] == "held"
    assert c["evidence"]["mae"]["beats_at_small"] and c["evidence"]["mae"]["gap_narrows"]


def test_claim1_did_not_hold_when_the_gap_widens_or_is_negative():
    assert study.claim_label_efficiency(_cfg(), _le(0.02, 0.1))["status"] == "did not hold"
    assert study.claim_label_efficiency(_cfg(), _le(-0.05, -0.1))["status"] == "did not hold"


def test_claims_not_evaluated_with_one_seed():
    c = study.claim_label_efficiency(_cfg(seeds=[0]), _le(0.1, 0.02))
    assert c["status"] == "not evaluated" and "seed" in c["reason"]


def test_claim3_in_domain_vs_unrelated():
    assert study.claim_in_domain(_cfg(), _le(0.1, 0.02, unrelated_gap=0.05))["status"] == "held"
    assert study.claim_in_domain(_cfg(), _le(0.1, 0.02, unrelated_gap=-0.05))["status"] == "did not hold"


def _probes(mae, simclr):
    rows = []
    for init, vals in (("mae", mae), ("simclr", simclr)):
        for seed in (0, 1, 2):
            for protocol, v in zip(("linear probe", "kNN probe", "fine-tune"), vals):
                rows.append({"init": init, "protocol": protocol, "seed": seed, "n_labels": 128,
                             "balanced_accuracy": v + 0.01 * seed})
    return pd.DataFrame(rows)


def test_claim2_probe_vs_finetune():
    held = study.claim_probe_vs_finetune(_cfg(), _probes(mae=(0.55, 0.52, 0.8), simclr=(0.7, 0.68, 0.78)))
    assert held["status"] == "held"
    not_held = study.claim_probe_vs_finetune(_cfg(), _probes(mae=(0.75, 0.7, 0.8), simclr=(0.6, 0.6, 0.7)))
    assert not_held["status"] == "did not hold"


def test_labelled_subset_is_balanced_and_seeded():
    pool = study.SurfaceSimulator(size=32).sample(40, seed=0)
    a = study._labelled_subset(pool, 10, seed=1)
    assert len(set(a)) == 10 and pool.labels[a].sum() == 5
    np.testing.assert_array_equal(a, study._labelled_subset(pool, 10, seed=1))
    assert not np.array_equal(a, study._labelled_subset(pool, 10, seed=2))
    with pytest.raises(ValueError, match="pool holds 40"):
        study._labelled_subset(pool, 41, seed=0)


def test_dinov2_is_reported_not_evaluated_offline():
    cfg = labkit.configure("ssl_industrial", "smoke", {"inits": ["dinov2"]})
    inits, table = study.initialisations(cfg, {"unlabeled": study.SurfaceSimulator(size=32).sample(4)}, {})
    assert inits == {}
    assert table.loc[0, "status"] == "not evaluated" and "weights unavailable" in table.loc[0, "reason"]
