"""`fusionrank deploy` and `fusionrank status`: switch a running server to a new build's models
with no failed request and no request that mixes versions, and show what serves since when.

    fusionrank build --catalogue new_products.csv --out build-next
    fusionrank deploy --url 127.0.0.1:8001 --repository build/model_repository \\
                      --source build-next/model_repository
    fusionrank status --url 127.0.0.1:8001 --repository build/model_repository

`fusionrank serve` runs Triton with explicit model control, and each ensemble's steps are pinned
to one version of each of its models. A rollout:

1. compares each model of the source with the serving one (its version folder's files, its
   config); a model whose files are the same is left alone, and so is an ensemble none of
   whose models changed (a catalogue change leaves recommend and sentiment untouched);
2. stages each changed model as a NEW version folder beside the serving one (hard links) and
   loads it: Triton loads only that version, since nothing else in the model's folder changed;
3. loads each affected ensemble, pinned to the new versions, under a probe name and checks its
   answers to a few probe requests (well formed, as many results as the serving version gives);
4. switches: writes the ensemble's new version, pinned to the new models, and loads it. Triton
   swaps it in once it is ready; a request holds the model versions its ensemble version pins
   from its start to its end, so every answer is wholly the old build's or wholly the new one's;
5. after a drain, drops the old versions (their folders, then their load).

A failure before the switch refuses the rollout: the new versions are removed, and the old
ones never stopped serving. `deploy --rolling` does this replica by replica for the replicas of
`fusionrank serve --replicas N` (app/replicas.py), and rolls back those already switched if a
later one refuses. Each rollout is a JSON line in `rollouts.jsonl` beside the models.

Model control answers only callers with the server's key (app/control.py): `deploy`
and `status` read it from the file `serve` keeps beside `--repository` for the server at
`--url` (which also proves that server serves that repository), or take `--control-key-file`
/ $FUSIONRANK_CONTROL_KEY for a server elsewhere.

One job a module:

    plan.py      what changes, from the two repositories alone (step 1)
    apply.py     the phases on the running server, and their undoing (steps 2–5)
    probes.py    the probe requests and their checks (step 3)
    rollout.py   one rollout end to end: lock, plan, apply, the rollout log
    rolling.py   `deploy --rolling`: one rollout a replica of `serve --replicas`, in turn
    status.py    `status`'s rows and table
    commands.py  the two subcommands
    errors.py    RolloutRefused, and a Triton error in one line
"""

from fusionrank.app.deploy.commands import COMMANDS
from fusionrank.app.deploy.errors import RolloutRefused
from fusionrank.app.deploy.plan import Plan, model_configs, only_version, plan_rollout
from fusionrank.app.deploy.rollout import DRAIN_S, LOCK, ROLLOUT_LOG, Rollout, deploy, read_log
from fusionrank.app.deploy.status import MISSING, server_status, status_table

__all__ = [
    "COMMANDS",
    "DRAIN_S",
    "LOCK",
    "MISSING",
    "ROLLOUT_LOG",
    "Plan",
    "Rollout",
    "RolloutRefused",
    "deploy",
    "model_configs",
    "only_version",
    "plan_rollout",
    "read_log",
    "server_status",
    "status_table",
]
