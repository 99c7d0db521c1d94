"""SAR sea-ice study, "features learned" for a transfer arm, judged on the encoder's **source task**.

The precondition's purpose is to rule out a "pretrained" arm that learned nothing. Whether its features transfer to
SAR is what the claims themselves test, so gating them on a frozen SAR probe would beg the question; the frozen SAR
probe of every arm stays in the report as a finding (table ``probes``: frozen features on SAR vs random init).

* ``cross_sensor``: the record its producer wrote into the checkpoint's sidecar (the JSON beside the safetensors,
  read by ``labkit.core.checkpoints.load_checkpoint``), key ``features_learned`` in the format of
  :mod:`labkit.models.features_record` (which the producer writes with): ``{"passed": bool, "estimate":
  float, "ci": [lo, hi], "n": int, "unit": "seeds", "statement": str, "margin": float}`` (the producing study's
  own "features learned" precondition: its encoder's frozen probe against the same network at random init on its
  own task, paired over seeds). A sidecar without it leaves the arm's claims *not evaluated*, naming what to provide.
* ``imagenet``: the source task is ImageNet-1k classification. With ``imagenet_weights: pretrained`` (timm's
  ``resnet18.a1_in1k``) the record is the weights' published evaluation (:data:`IMAGENET_RECORD`); a weights file
  is judged on its own sidecar's record, like the cross-sensor arm (a file says nothing of what it learned).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from labkit.models.features_record import FIELDS, KEY, check_record  # noqa: F401  (the format, one definition)

# timm resnet18.a1_in1k ("ResNet strikes back" A1 recipe, arXiv 2110.00476): 71.5 % top-1 on the ImageNet-1k
# validation set against 0.1 % (chance, 1,000 classes) for the same network at random init. One published
# evaluation of one training run: no interval over seeds, so the "interval" is the point itself.
IMAGENET_RECORD = {
    "passed": True,
    "estimate": 0.714,  # top-1 minus chance
    "ci": [0.714, 0.714],
    "n": 1,
    "unit": "published evaluation",
    "statement": "timm resnet18.a1_in1k classifies the ImageNet-1k validation set at 71.5 % top-1, the same "
    "network at random init at chance (0.1 %)",
    "margin": 0.0,
    "producer": "timm (pytorch-image-models), model card of resnet18.a1_in1k; ResNet strikes back, arXiv 2110.00476",
}

COLUMNS = ["arm", "passed", "estimate", "ci95_low", "ci95_high", "n", "unit", "margin", "statement", "producer"]


def record_for(arm: str, spec: str, meta: Mapping | None, producer: str) -> tuple[dict | None, str]:
    """(record, why missing) of ``arm``'s weights: the sidecar's ``features_learned`` with its ``producer``, the
    published ImageNet record for ``imagenet_weights: pretrained``; (None, the reason) when there is none."""
    if arm == "imagenet" and spec == "pretrained":
        return dict(IMAGENET_RECORD), ""
    record = (meta or {}).get(KEY)
    if record is None:
        return None, f"its sidecar records no '{KEY}'"
    problem = check_record(record)
    if problem:
        return None, f"its sidecar's record is unusable: {problem}"
    return {**{k: record[k] for k in FIELDS}, "producer": str(record.get("producer") or producer)}, ""


def missing_reason(arm: str, spec: str, why: str, sidecar: str | None, producer: str | None) -> str:
    """Why ``arm``'s claims are not evaluated without a source-task record, naming what to provide."""
    where = f"sidecar {sidecar}" if sidecar else "no sidecar"
    fix = (
        f"republish the producing study ({producer}: `labkit reproduce {producer}` writes the record) or set "
        f"parameter '{arm}_weights' to a checkpoint whose sidecar records it"
        if producer
        else f"write a JSON sidecar beside the weights file with key '{KEY}' (its producer's source-task result: "
        f"{', '.join(FIELDS)}), or set parameter '{arm}_weights' to a checkpoint whose sidecar records it"
    )
    return (
        f"features learned ({arm}) cannot be judged: the weights of parameter '{arm}_weights' ({spec}; {where}) do "
        f"not record whether they learned features on their source task ({why}); {fix}"
    )


def describe(record: Mapping) -> str:
    """The record quoted: statement, estimate and interval, who recorded it."""
    lo, hi = (float(v) for v in record["ci"])
    unit = record.get("unit", "seeds")
    numbers = (
        f"{float(record['estimate']):+.4g}, 95% CI [{lo:+.4g}, {hi:+.4g}] over {record['n']} {unit}"
        if lo != hi
        else f"{float(record['estimate']):.4g}, {record['n']} {unit}"
    )
    return (
        f"on its source task, as recorded by its producer ({record.get('producer', 'unknown')}): "
        f'"{record["statement"]}" ({numbers}; margin {float(record["margin"]):g}; '
        f"{'passed' if record['passed'] else 'failed'})"
    )


def frame(weights: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table ``source_features``: one row per pretrained arm whose weights carry a usable record (the
    "features learned" precondition reads ``passed``, 1 or 0)."""
    rows = []
    for arm, w in weights.items():
        record = (w.get("provenance") or {}).get(KEY)
        if not isinstance(record, Mapping):
            continue
        lo, hi = (float(v) for v in record["ci"])
        rows.append(
            {
                "arm": arm,
                "passed": 1.0 if record["passed"] else 0.0,
                "estimate": float(record["estimate"]),
                "ci95_low": lo,
                "ci95_high": hi,
                "n": int(record["n"]),
                "unit": str(record.get("unit", "seeds")),
                "margin": float(record["margin"]),
                "statement": str(record["statement"]),
                "producer": str(record.get("producer", "")),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
