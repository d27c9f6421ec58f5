# Optimization: one job per stage (one process runs all of its evaluations), range
# extraction between the stages of the strategies that hand ranges on (IIS, narrowing), and
# promotion between the rungs of successive halving and Hyperband.


rule run_stage:
    input:
        unpack(stage_inputs),
    output:
        trials=f"{STAGE}/trials.jsonl",
        summary=f"{STAGE}/stage.json",
    params:
        config=lambda wc: digest(stage_config(SETTINGS, stage_key(wc))),
        out_dir=lambda wc, output: Path(output.summary).parent,
        # `ranges` keeps the shell command's text, which Snakemake's code trigger compares
        ranges=handoff_option,
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        f"{STAGE}/run_stage.log",
    priority: stage_priority
    threads: SETTINGS.trainer.threads
    resources:
        mem_mb=training_memory,
        runtime=stage_runtime,
        gpu=TRAINING.gpus,
    shell:
        "{params.iishpo} run-stage --dataset {wildcards.dataset} --optimizer {wildcards.optimizer} "
        "--strategy {wildcards.strategy} --seed {wildcards.seed} --stage {wildcards.stage} "
        "--data {input.data} {params.ranges} --out-dir {params.out_dir} {params.overrides} 2> {log}"


rule extract_ranges:
    input:
        trials=rules.run_stage.output.trials,
    output:
        ranges=f"{STAGE}/{RANGES.file}",
    wildcard_constraints:
        strategy=handing_on(RANGES),
    params:
        config=lambda wc: digest(ranges_config(SETTINGS, next_resolution(wc))),
        resolution=next_resolution,
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        f"{STAGE}/extract_ranges.log",
    priority: handoff_priority
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} extract-ranges --trials {input.trials} --resolution {params.resolution} "
        "--output {output.ranges} {params.overrides} 2> {log}"


rule promote_configs:
    input:
        trials=rules.run_stage.output.trials,
    output:
        promotions=f"{STAGE}/{PROMOTIONS.file}",
    wildcard_constraints:
        strategy=handing_on(PROMOTIONS),
    params:
        config=lambda wc: digest(promotions_config(*promotion_of(wc))),
        resolution=lambda wc: promotion_of(wc)[0],
        promote=lambda wc: promotion_of(wc)[1],
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        f"{STAGE}/promote_configs.log",
    priority: handoff_priority
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} promote-configs --trials {input.trials} --resolution {params.resolution} "
        "--promote {params.promote} --output {output.promotions} {params.overrides} 2> {log}"
