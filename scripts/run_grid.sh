#!/usr/bin/env bash
# Issue 20's grid (configs/ablate/v2_grid.yaml), from a fixed commit, in its own git worktree,
# resumable, logged. Run it again after an interruption: every finished step is kept.
#
#   scripts/run_grid.sh [COMMIT]            # default COMMIT: HEAD of this checkout
#   nohup scripts/run_grid.sh COMMIT >/dev/null 2>&1 &      # detached; follow the log file
#   scripts/run_grid.sh --plan [COMMIT]     # print the plan and the time estimate, run nothing
#
# Steps, each skipped when already done:
#   0. git worktree at COMMIT (detached): $GRID_ROOT/drcl-grid-<sha8>; code edits elsewhere do
#      not change what the grid runs. Refuses a worktree that is at another commit.
#   1. the demo data (v2 scenes: `drcl data make-demo work/demo/data`) inside that worktree, or
#      a link to GRID_DATA.
#   2. the plan and its estimate; preflight: the probe of issue 19 exists if the grid logs it.
#   3. the fine-tuning length curve (generic init, AP on tune): F = its pick.
#   4. drcl ablate configs/ablate/v2_grid.yaml --work-dir work/v2_grid with fine-tuning length F.
#   5. generic / full / full_sup on the tune split (work/v2_grid/tune.md: the choice of
#      pretrain.lcl.supervised), the dose and box-composition figures (report_extra/), the report.
#
# Environment: GRID_ROOT (parent of the worktree; default: the parent of this checkout),
# GRID_CONFIG (default configs/ablate/v2_grid.yaml), GRID_WORK (default work/v2_grid, inside the
# worktree), DRCL_PYTHON (default: this checkout's .venv/bin/python), GRID_NICE (default 10),
# GRID_DATA (an existing demo data folder to link as work/demo/data instead of generating it).
# Log: $GRID_WORK/grid.log inside the worktree (appended; the path is printed first).
set -euo pipefail

plan_only=0
if [[ "${1:-}" == "--plan" ]]; then
    plan_only=1
    shift
fi
if [[ $# -gt 1 || "${1:-}" == -* ]]; then
    echo "usage: $0 [--plan] [COMMIT]" >&2
    exit 2
fi
repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --verify "${1:-HEAD}^{commit}")
python=${DRCL_PYTHON:-$repo/.venv/bin/python}
config=${GRID_CONFIG:-configs/ablate/v2_grid.yaml}
work=${GRID_WORK:-work/v2_grid}
root=${GRID_ROOT:-$(dirname "$repo")}
wt=$root/drcl-grid-${commit:0:8}
nice_level=${GRID_NICE:-10}
if [[ -n "${GRID_DATA:-}" ]]; then  # relative to where it was launched
    GRID_DATA=$(cd "$GRID_DATA" && pwd)
    export GRID_DATA
fi

if [[ ! -x "$python" ]]; then
    echo "$0: no python at $python (set DRCL_PYTHON)" >&2
    exit 1
fi
if [[ -d "$wt" ]]; then
    at=$(git -C "$wt" rev-parse HEAD)
    if [[ "$at" != "$commit" ]]; then
        echo "$0: $wt is at $at, not $commit; remove it or choose GRID_ROOT" >&2
        exit 1
    fi
else
    git -C "$repo" worktree add --detach "$wt" "$commit"
fi
# Run the worktree's own copy of this script: bash reads a script while it runs, so an edit to
# the launching checkout's copy must not reach a running grid.
if [[ "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)" != "$(cd "$wt" && pwd -P)" ]]; then
    export DRCL_PYTHON=$python GRID_ROOT=$root
    exec bash "$wt/scripts/run_grid.sh" $([[ $plan_only == 1 ]] && echo --plan) "$commit"
fi
cd "$wt"
mkdir -p "$work"
log=$wt/$work/grid.log
echo "grid: commit $commit, worktree $wt, log $log"
exec > >(tee -a "$log") 2>&1
echo "=== $(date -u +%FT%TZ) run_grid.sh $commit (config $config, work $work)"

export PYTHONPATH=$wt/src
run() { nice -n "$nice_level" "$python" "$@"; }

# 1. data (deterministic: the same files on every machine)
if [[ -n "${GRID_DATA:-}" && ! -e work/demo/data ]]; then
    mkdir -p work/demo
    ln -s "$(cd "$GRID_DATA" && pwd)" work/demo/data
fi
if [[ ! -f work/demo/data/annotations/tune.json ]]; then
    echo "=== $(date -u +%T) demo data"
    run -m drcl.cli.main data make-demo work/demo/data
fi

# 2. the plan, then preflight: a grid that logs the probe needs it (issue 19)
echo "=== $(date -u +%T) plan (estimate before the curve; fine-tuning length from the config)"
run -m drcl.ablation.plan "$config"
if [[ $plan_only == 1 ]]; then
    exit 0
fi
run - "$config" <<'PY'
import sys
from drcl.ablation.runner import load_ablate_config
from drcl.config.schema import PretrainConfig

if load_ablate_config(sys.argv[1]).probe_every_epochs > 0 and not hasattr(PretrainConfig(), "probe"):
    sys.exit("run_grid.sh: this commit has no pretrain.probe (issue 19 has not landed)")
PY

# 3. the fine-tuning length curve -> F
echo "=== $(date -u +%T) fine-tuning length curve"
run -m drcl.ablation.curve "$config" --work-dir "$work"
F=$(run -c "import json,sys; print(json.load(open(sys.argv[1]))['picked']['iters'])" "$work/curve/curve.json")
if [[ ! "$F" =~ ^[0-9]+$ ]]; then
    echo "$0: the curve picked no length ($F); see $work/curve/curve.json" >&2
    exit 1
fi
ft="finetune_overrides=[train.max_iters=$F,train.checkpoint_every=$(( (F + 1) / 2 ))]"
echo "=== $(date -u +%T) fine-tuning length F = $F; plan with it:"
run -m drcl.ablation.plan "$config" "$ft"

# 4. the grid (resumes: finished (row, seed) are skipped)
echo "=== $(date -u +%T) grid"
start=$(date +%s)
run -m drcl.cli.main ablate "$config" --work-dir "$work" "$ft"
echo "=== $(date -u +%T) grid done in $(( $(date +%s) - start )) s (this invocation)"

# 5. full vs full_sup on the tune split (the choice of pretrain.lcl.supervised), figures, report
run -m drcl.ablation.tune "$config" --work-dir "$work" --rows generic full full_sup
run -m drcl.report.dose "$work" --out "$work/report_extra"
boxes=()
for row in full full_sup hcl_lcl; do
    [[ -f $work/$row/seed0/pretrain/metrics.jsonl ]] && boxes+=("$row=$work/$row/seed0/pretrain")
done
if [[ ${#boxes[@]} -gt 0 ]]; then
    run -m drcl.cli.main analyze box-composition "${boxes[@]}" \
        --out "$work/report_extra/box_composition.png"
fi
run -m drcl.cli.main report --ablation "$work" --out "$work/report"
echo "=== $(date -u +%T) done: $work/results.json, $work/report, $work/report_extra"
