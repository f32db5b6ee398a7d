"""Do the maps predict where interventions work? (issue 11, docs/validity.md)

draws          depth-matched random block sets and the first-N / last-N / complement baselines
interventions  identity (ablation), mean-update (mean-ablation) and steering on a set of blocks
lora           LoRA (peft) restricted to a set of blocks, with a fixed budget
score          the validity score of a map lane's effect against the random draws
"""
