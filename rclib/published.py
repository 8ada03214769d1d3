"""Published reproductions on LLaVA-1.5-7B at 64 visual tokens (of 576): each method's mean share of the full
model's scores over the usual benchmarks, in percent, as the field's 2025 comparison tables report them
(CDPruner's and VisPruner's tables, and the papers' own). Shown beside what the embedded world measures, to say
where the world agrees with the real model; never used to build or tune anything."""

SHARE_OF_FULL_AT_64: dict[str, float] = {
    "tome": 74.0,
    "fastv": 76.0,
    "sparsevlm": 86.0,
    "prumerge+": 91.0,
    "visionzip": 95.0,
    "divprune": 95.0,
    "cdpruner": 97.0,
}
