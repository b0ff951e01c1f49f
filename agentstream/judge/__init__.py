"""LLM-as-judge: sampled runs graded by a judge model, in judge runs of their own (journaled,
routed to the `judge` tier, budgeted like any run); each grade a `JudgeVerdict` on the judged
run (docs/evaluation.md, "LLM-as-judge")."""
