# Optimization: one job per stage (one process runs all of its evaluations), and range
# extraction between the stages of an IIS run.


def stage_inputs(wildcards):
    inputs = {"data": prepared_file(wildcards.dataset, stage_resolution(wildcards))}
    stage = int(wildcards.stage)
    if stage > 0:
        inputs["ranges"] = STAGE.format(**{**wildcards, "stage": stage - 1}) + "/ranges.json"
    return inputs


rule run_stage:
    input:
        unpack(stage_inputs),
    output:
        trials=f"{STAGE}/trials.jsonl",
        summary=f"{STAGE}/stage.json",
    params:
        out_dir=STAGE,
        ranges=lambda wc, input: f"--ranges {input.ranges}" if "ranges" in input.keys() else "",
    log:
        f"{STAGE}/run_stage.log",
    threads: SETTINGS.trainer.threads
    resources:
        runtime=60 * 24,
        mem_mb=4000,
    shell:
        "{IISHPO} run-stage --dataset {wildcards.dataset} --optimizer {wildcards.optimizer} "
        "--strategy {wildcards.strategy} --seed {wildcards.seed} --stage {wildcards.stage} "
        "--data {input.data} {params.ranges} --out-dir {params.out_dir} {OVERRIDE_ARGS} 2> {log}"


rule extract_ranges:
    input:
        trials=rules.run_stage.output.trials,
    output:
        ranges=f"{STAGE}/ranges.json",
    params:
        resolution=lambda wc: STUDY.stages(wc.strategy)[int(wc.stage) + 1][0],
    log:
        f"{STAGE}/extract_ranges.log",
    shell:
        "{IISHPO} extract-ranges --trials {input.trials} --resolution {params.resolution} "
        "--output {output.ranges} {OVERRIDE_ARGS} 2> {log}"
