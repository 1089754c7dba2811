"""The registry of steps: the CLI's subcommands, a run config's sections and the recipe are built from it.

    from deita_ray.steps import STEPS
    STEPS["score"].config, STEPS["score"].execute(config), STEPS["sft"].command == ("train", "sft")

Adding a step: its file here (one config class, a `spec` or a `run`), and one line below.
"""

from deita_ray.steps import compare, embed, eval, evolve, judge, labels, score, select, train

STEPS = {step.name: step for step in (
    score.STEP,
    embed.STEP,
    select.STEP,
    evolve.STEP,
    judge.STEP,
    labels.STEP,
    *train.STEPS,
    eval.STEP,
    compare.STEP,
)}
